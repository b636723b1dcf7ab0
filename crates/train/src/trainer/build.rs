//! The stages that build a run: the model, the device split, the loaders and the optimiser.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use mocoop_data::{Dataset, LoaderConfig};
use mocoop_model::Clip;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use super::{DeviceSplit, TrainLoader, TrainOptions};
use crate::TrainError;
use crate::config::{OptimConfig, TrainConfig};
use crate::data::{DataErrors, EpochLoader, SkippedImages};
use crate::features::{FeatureCache, FeatureLoader};
use crate::learner::{LearnerSetup, PromptLearner};
use crate::model::ClassSetup;

/// The method's model for a new run.
pub(super) fn build_model<B: AutodiffBackend, M: PromptLearner<B>>(
    config: &TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    groups: &TemplateGroups,
    dataset: &Dataset,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<M, TrainError> {
    M::build(LearnerSetup {
        config,
        clip,
        tokenizer,
        groups,
        classes: ClassSetup {
            train: dataset.classnames.clone(),
            reference: dataset.all_classnames.clone(),
            train_in_reference: dataset.class_ids.clone(),
        },
        encode_all_experts: options.encode_all_experts,
        device,
    })
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
pub(super) fn split_devices<B: AutodiffBackend, M: PromptLearner<B>>(
    model: &mut M,
    split: DeviceSplit,
    devices: &[B::Device],
    notes: &mut Vec<String>,
) -> Result<usize, TrainError> {
    if split == DeviceSplit::Batch {
        return Ok(devices.len());
    }
    notes.push(model.split_text_by_class(devices)?);
    Ok(1)
}

/// The loaders of a run.
pub(super) struct Loaders<B: AutodiffBackend> {
    pub(super) train: TrainLoader<B>,
    pub(super) valid: EpochLoader<B::InnerBackend>,
    pub(super) skipped: SkippedImages,
}

/// The training loader (images, or cached features, which are computed here) cut into `parts`
/// per batch, and the validation loader (empty unless the run validates).
pub(super) fn build_loaders<B: AutodiffBackend, M: PromptLearner<B>>(
    config: &TrainConfig,
    dataset: &Dataset,
    model: &mut M,
    parts: usize,
    options: &TrainOptions,
    device: &B::Device,
    errors: &DataErrors,
) -> Result<Loaders<B>, TrainError> {
    let data = &config.data;
    let size = model.clip().config().vision.image_size as u32;
    let train_config = LoaderConfig {
        workers: data.workers,
        skip_bad_images: data.skip_bad_images,
        ..LoaderConfig::train(size, data.batch_size, data.seed)
    };
    let (train, skipped) = if config.cached_views > 0 {
        let (cache, skipped) = FeatureCache::compute(
            &model.clip().valid(),
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
        model.use_cached_features()?;
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

/// burn's SGD over the model `M`, as the run's optimiser.
pub(super) type Sgd<B, M> =
    OptimizerAdaptor<burn::optim::Sgd<<B as AutodiffBackend>::InnerBackend>, M, B>;

/// The run's SGD over the model.
pub(super) fn optimiser<B: AutodiffBackend, M: PromptLearner<B>>(optim: &OptimConfig) -> Sgd<B, M> {
    optim.sgd().init::<B, M>()
}
