//! The stages that build a run: the model, the device split, the loaders and the optimiser.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use mocoop_data::{Dataset, LoaderConfig};
use mocoop_model::Clip;
use mocoop_model::prompt::TextShard;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use super::{DeviceSplit, TrainLoader, TrainOptions};
use crate::TrainError;
use crate::config::{OptimConfig, TrainConfig};
use crate::data::{DataErrors, EpochLoader, SkippedImages};
use crate::features::{FeatureCache, FeatureLoader};
use crate::loss_scale::LossScale;
use crate::model::{ClassSetup, MocoopModel};

/// The model to train, with the run's step settings.
pub(super) fn build_model<B: AutodiffBackend>(
    config: &TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    groups: &TemplateGroups,
    dataset: &Dataset,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<MocoopModel<B>, TrainError> {
    let classes = ClassSetup {
        train: dataset.classnames.clone(),
        reference: dataset.all_classnames.clone(),
        train_in_reference: dataset.class_ids.clone(),
    };
    let mut model = MocoopModel::new(
        clip,
        tokenizer,
        config.mixture.clone(),
        groups.groups(),
        &classes,
        config.loss.clone(),
        config.ln_tuning,
        config.router_noise,
        device,
    )?;
    model.settings.clip_norm = config.optim.clip_norm;
    model.settings.ln_lr_scale = config.optim.ln_lr_scale;
    model.settings.noise_seed = config.data.seed;
    model.settings.encode_all_experts = options.encode_all_experts;
    if config.precision.needs_loss_scaling() {
        model.state.loss_scale = Some(LossScale::default());
    }
    Ok(model)
}

/// Steps per epoch.
pub(super) fn iterations(config: &TrainConfig, dataset: &Dataset) -> Result<usize, TrainError> {
    let iters = dataset.train.len().div_ceil(config.data.batch_size);
    if iters == 0 {
        return Err(TrainError::Config(format!(
            "dataset '{}' has no training images",
            config.data.dataset
        )));
    }
    Ok(iters)
}

/// Shares the steps between `devices`: returns how many parts each batch is cut into (1 when
/// the prompts, not the batches, are split by class).
pub(super) fn split_devices<B: AutodiffBackend>(
    model: &mut MocoopModel<B>,
    split: DeviceSplit,
    devices: &[B::Device],
    notes: &mut Vec<String>,
) -> usize {
    if split == DeviceSplit::Batch {
        return devices.len();
    }
    model.split_text(devices);
    let rows = model.prompts.rows();
    let shards = &model.text_shards;
    let shares: Vec<String> = std::iter::once(TextShard::first_device_rows(shards, rows))
        .chain(shards.iter().map(TextShard::rows))
        .map(|n| n.to_string())
        .collect();
    notes.push(if shares.len() > 1 {
        format!(
            "each step's {rows} prompts were encoded on {} devices, in shares of {} prompts \
             (about equal in tokens)",
            shares.len(),
            shares.join(", ")
        )
    } else {
        "the prompts were not split by class: there was one device".to_string()
    });
    1
}

/// The loaders of a run.
pub(super) struct Loaders<B: AutodiffBackend> {
    pub(super) train: TrainLoader<B>,
    pub(super) valid: EpochLoader<B::InnerBackend>,
    pub(super) skipped: SkippedImages,
}

/// The training loader (images, or cached features, which are computed here) cut into `parts`
/// per batch, and the validation loader (empty unless the run validates).
pub(super) fn build_loaders<B: AutodiffBackend>(
    config: &TrainConfig,
    dataset: &Dataset,
    model: &mut MocoopModel<B>,
    parts: usize,
    options: &TrainOptions,
    device: &B::Device,
    errors: &DataErrors,
) -> Result<Loaders<B>, TrainError> {
    let data = &config.data;
    let size = model.clip.config().vision.image_size as u32;
    let train_config = LoaderConfig {
        workers: data.workers,
        skip_bad_images: data.skip_bad_images,
        ..LoaderConfig::train(size, data.batch_size, data.seed)
    };
    let (train, skipped) = if config.cached_views > 0 {
        let (cache, skipped) = FeatureCache::compute(
            &model.clip.valid(),
            &data.dataset,
            &dataset.train,
            train_config,
            config.cached_views,
            options.quiet,
            device,
        )?;
        let cache = FeatureCache {
            features: Tensor::from_inner(cache.features),
            present: cache.present,
            views: cache.views,
        };
        model.settings.cached_features = true;
        let items = dataset.train.clone();
        let loader = FeatureLoader::new(&data.dataset, items, train_config, cache, device.clone());
        (TrainLoader::Features(loader.split_across(parts)), skipped)
    } else {
        let items = dataset.train.clone();
        let loader = EpochLoader::<B>::new(
            &data.dataset,
            items,
            train_config,
            device.clone(),
            errors.clone(),
        )
        .split_across(parts);
        let skipped = loader.skipped();
        (TrainLoader::Images(loader), skipped)
    };
    let valid_items = if config.validate {
        dataset.val.clone()
    } else {
        Vec::new()
    };
    let valid_config = LoaderConfig {
        workers: data.workers,
        ..LoaderConfig::test(size, options.eval_batch_size.max(1))
    };
    let valid = EpochLoader::new(
        &data.dataset,
        valid_items,
        valid_config,
        device.clone(),
        errors.clone(),
    );
    Ok(Loaders {
        train,
        valid,
        skipped,
    })
}

/// burn's SGD over the model, as the run's optimiser.
pub(super) type Sgd<B> =
    OptimizerAdaptor<burn::optim::Sgd<<B as AutodiffBackend>::InnerBackend>, MocoopModel<B>, B>;

/// The run's SGD over the model.
pub(super) fn optimiser<B: AutodiffBackend>(optim: &OptimConfig) -> Sgd<B> {
    optim.sgd().init::<B, MocoopModel<B>>()
}
