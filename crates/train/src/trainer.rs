//! A training run end to end: data, model, burn-train `Learner`, checkpoints, final evaluation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::optim::SgdConfig;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{Learner, LearningComponentsMarker, SupervisedTraining, TrainingStrategy};

use mocoop_data::{Dataset, ImageBatch, LoaderConfig};
use mocoop_model::Clip;
use mocoop_model::prompt::TextShard;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Method, OptimConfig, TrainConfig, epoch_lr};
use crate::data::{DataErrors, EpochCursor, EpochLoader, SkippedImages};
use crate::eval::{EvalTarget, TrainedRun, evaluate_run, template_groups, training_data};
use crate::features::{FeatureCache, FeatureLoader};
use crate::journal::{self, EpochRecord, Journal};
use crate::loss_scale::LossScale;
use crate::metrics::{ExpertLoadMetric, LrMetric, ValueMetric};
use crate::model::{ClassSetup, MocoopModel, StepState};
use crate::renderer::BarRenderer;
use crate::resume::{self, ResumePoint};
use crate::run::{self, RunResults};
use crate::run_loop::{Outcome, RunLoop, RunState};
use crate::saver::CheckpointSaver;
use crate::{TrainError, checkpoint};

/// The epoch-wise schedule as a burn `LrScheduler` (stepped once per iteration by the learner;
/// the rate changes only when an epoch starts).
#[derive(Debug, Clone)]
pub struct EpochSchedule {
    optim: OptimConfig,
    iters_per_epoch: usize,
    iteration: usize,
}

impl EpochSchedule {
    /// The schedule of `optim` with `iters_per_epoch` steps per epoch.
    pub fn new(optim: OptimConfig, iters_per_epoch: usize) -> Self {
        Self {
            optim,
            iters_per_epoch: iters_per_epoch.max(1),
            iteration: 0,
        }
    }

    /// The schedule after `steps` iterations (a resumed run).
    pub fn after(mut self, steps: usize) -> Self {
        self.iteration = steps;
        self
    }
}

impl LrScheduler for EpochSchedule {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let epoch = self.iteration / self.iters_per_epoch;
        self.iteration += 1;
        epoch_lr(&self.optim, epoch)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}

/// How a run behaves beyond its configuration.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Print nothing while training.
    pub quiet: bool,
    /// Evaluate on the test split(s) after training and write `results.json`.
    pub evaluate: bool,
    /// Replace an existing run of the same method in the output directory.
    pub overwrite: bool,
    /// Epoch checkpoints kept.
    pub keep_checkpoints: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Once set (e.g. by a SIGINT handler), training stops after the current step and writes a
    /// checkpoint to resume from.
    pub stop: Option<Arc<AtomicBool>>,
    /// Encode every expert's prompts at every step (the result is the same; for comparisons).
    pub encode_all_experts: bool,
    /// How a run on several devices shares its steps between them.
    pub split: DeviceSplit,
}

/// How a training step is shared between several devices. Either way the result is the
/// one-device result up to floating-point summation order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceSplit {
    /// Data parallel: each device gets a part of every batch and runs the whole step on it,
    /// text side included (burn-train's multi-device strategy).
    #[default]
    Batch,
    /// The text side split by class: the first device runs the step, and every device encodes a
    /// share of the `E × C` prompts (see [`MocoopModel::split_text`]). For many classes, where
    /// the prompts, not the images, take the time.
    Classes,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            quiet: false,
            evaluate: true,
            overwrite: false,
            keep_checkpoints: 2,
            eval_batch_size: 100,
            stop: None,
            encode_all_experts: false,
            split: DeviceSplit::Batch,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The run directory.
    pub run: PathBuf,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Per-epoch averages.
    pub epochs: Vec<EpochRecord>,
    /// Test results (when evaluated).
    pub results: Option<RunResults>,
    /// Things the user should know (e.g. where the few-shot subset was saved).
    pub notes: Vec<String>,
}

/// The training batches: decoded images, or cached image features.
enum TrainLoader<B: AutodiffBackend> {
    Images(EpochLoader<B>),
    Features(FeatureLoader<B>),
}

impl<B: AutodiffBackend> TrainLoader<B> {
    /// Where the next epoch starts.
    fn cursor(&self) -> &EpochCursor {
        match self {
            Self::Images(loader) => loader.cursor(),
            Self::Features(loader) => loader.cursor(),
        }
    }

    /// The loader for burn-train.
    fn shared(self) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        match self {
            Self::Images(loader) => Arc::new(loader),
            Self::Features(loader) => Arc::new(loader),
        }
    }
}

/// Metadata stored in every checkpoint of a run.
fn checkpoint_metadata(config: &TrainConfig) -> HashMap<String, String> {
    HashMap::from([
        ("method".to_string(), config.method.to_string()),
        (
            "mixture".to_string(),
            serde_json::to_string(&config.mixture).expect("serialisable"),
        ),
        ("ln_tuning".to_string(), config.ln_tuning.to_string()),
    ])
}

/// Trains (or, for zero-shot CLIP, only evaluates) the run described by `config` into `out`.
///
/// With several `devices` and [`DeviceSplit::Batch`], every step's batch is split across them
/// (data parallel, burn-train's multi-device strategy): each computes the loss of its part,
/// weighted by the part's share of the batch, and the summed gradients are applied once on the
/// first device, which also holds the model between steps and runs everything else. The result
/// is the one-device result up to floating-point summation order (the load-balancing loss `L_lb`,
/// a statistic of the whole batch, is computed per part). With [`DeviceSplit::Classes`], the
/// first device runs every step and the others encode shares of its prompts. `clip` must be on
/// the first device.
pub fn train<B: AutodiffBackend>(
    config: TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    out: &Path,
    options: &TrainOptions,
    devices: &[B::Device],
) -> Result<TrainReport, TrainError> {
    fit(config, clip, tokenizer, out, options, devices, false)
}

/// Continues the run in `run` (killed, or interrupted) from its newest intact checkpoint with the
/// configuration in its `config.json`; `clip` must be the model named there. The result is the
/// one the uninterrupted run would have had. A finished run is not trained again: its results
/// are returned (evaluated first if they are missing). `devices` need not be those the run
/// started on.
pub fn resume<B: AutodiffBackend>(
    run: &Path,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    options: &TrainOptions,
    devices: &[B::Device],
) -> Result<TrainReport, TrainError> {
    let config = run::read_config(run, None)?;
    fit(config, clip, tokenizer, run, options, devices, true)
}

/// [`train`] (a new run) or [`resume`] (`resuming`), in stages: checks, the model, the device
/// split, the loaders, the optimiser, the resume point, the loop, the final checkpoint and the
/// evaluation.
fn fit<B: AutodiffBackend>(
    config: TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    out: &Path,
    options: &TrainOptions,
    devices: &[B::Device],
    resuming: bool,
) -> Result<TrainReport, TrainError> {
    config.validate().map_err(TrainError::Config)?;
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("no device to train on".into()));
    };
    if resuming && let Some(report) = finished(out, &config, options)? {
        return Ok(report);
    }
    let clip = clip.with_precision(config.precision);
    let (dataset, note) = training_data(&config.data)?;
    let mut notes: Vec<String> = note.into_iter().collect();
    let groups = checked_groups(&config)?;
    if !resuming {
        run::create(out, &config, options.overwrite)?;
    }
    if config.method == Method::ZeroShot {
        return zero_shot(config, clip.valid(), tokenizer, out, options, device, notes);
    }
    let mut model = build_model(&config, clip, tokenizer, &groups, &dataset, options, device)?;
    let iters = iterations(&config, &dataset)?;
    let parts = split_devices(&mut model, options.split, devices, &mut notes);
    if parts > config.data.batch_size.min(dataset.train.len()) {
        return Err(TrainError::Config(format!(
            "{parts} devices need a batch size and a training set of at least {parts} images \
             each (batch size {}, {} training images)",
            config.data.batch_size,
            dataset.train.len()
        )));
    }
    let errors = DataErrors::default();
    let loaders = build_loaders(
        &config, &dataset, &mut model, parts, options, device, &errors,
    )?;
    let start = Start {
        model,
        optim: optimiser::<B>(&config.optim),
        schedule: EpochSchedule::new(config.optim.clone(), iters),
        journal: Journal::new(iters),
        saved: Vec::new(),
    };
    let start = if resuming {
        resume_point(
            start,
            &config,
            out,
            &loaders.train,
            options.quiet,
            &mut notes,
            device,
        )?
    } else {
        start
    };
    let loop_devices = if parts > 1 {
        devices.to_vec()
    } else {
        vec![device.clone()]
    };
    let skipped = loaders.skipped.clone();
    let (model, state) = run_epochs(&config, out, options, start, loaders, loop_devices, errors);
    let state = stopped(state, out)?;

    let tensors = checkpoint::trainable_tensors(&model.clip, &model.mixture, config.ln_tuning);
    let mut metadata = checkpoint_metadata(&config);
    metadata.insert("epoch".into(), config.optim.epochs.to_string());
    checkpoint::write(&run::checkpoint_path(out), &tensors, &[], metadata)?;

    let results = if options.evaluate {
        let trained = TrainedRun {
            config: config.clone(),
            clip: model.clip,
            mixture: Some(model.mixture),
            dir: out.to_path_buf(),
        };
        let results = evaluate_run(&trained, tokenizer, &eval_target(&config, options), device)?;
        run::write_json(&out.join(run::RESULTS_FILE), &results)?;
        Some(results)
    } else {
        None
    };
    notes.extend(skipped_note(&skipped));
    if let Some(scale) = model.state.loss_scale.filter(|s| s.skipped > 0) {
        notes.push(format!(
            "f16: {} step(s) skipped for overflowing gradients while the loss scale came down \
             (now {})",
            scale.skipped, scale.scale
        ));
    }
    Ok(TrainReport {
        run: out.to_path_buf(),
        steps: state.journal.step,
        epochs: state.journal.epochs,
        results,
        notes,
    })
}

/// What to evaluate a finished run on: its own test split(s).
fn eval_target(config: &TrainConfig, options: &TrainOptions) -> EvalTarget {
    EvalTarget {
        dataset: None,
        split: None,
        batch_size: options.eval_batch_size,
        workers: config.data.workers,
    }
}

/// The run's template groups, one per expert for MoCoOp.
fn checked_groups(config: &TrainConfig) -> Result<TemplateGroups, TrainError> {
    let groups = template_groups(config.data.groups_file.as_deref(), &config.data.dataset)?;
    if config.method == Method::Mocoop && groups.groups().len() != config.mixture.num_experts() {
        return Err(TrainError::Config(format!(
            "the configuration has {} experts but dataset '{}' has {} template groups",
            config.mixture.num_experts(),
            config.data.dataset,
            groups.groups().len()
        )));
    }
    Ok(groups)
}

/// A zero-shot "run": nothing trains; it is evaluated when asked.
fn zero_shot<B: Backend>(
    config: TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    out: &Path,
    options: &TrainOptions,
    device: &B::Device,
    notes: Vec<String>,
) -> Result<TrainReport, TrainError> {
    let target = eval_target(&config, options);
    let trained = TrainedRun {
        config,
        clip,
        mixture: None,
        dir: out.to_path_buf(),
    };
    let results = if options.evaluate {
        let results = evaluate_run(&trained, tokenizer, &target, device)?;
        run::write_json(&out.join(run::RESULTS_FILE), &results)?;
        Some(results)
    } else {
        None
    };
    Ok(TrainReport {
        run: out.to_path_buf(),
        steps: 0,
        epochs: Vec::new(),
        results,
        notes,
    })
}

/// The model to train, with the run's step settings.
fn build_model<B: AutodiffBackend>(
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
fn iterations(config: &TrainConfig, dataset: &Dataset) -> Result<usize, TrainError> {
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
fn split_devices<B: AutodiffBackend>(
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
struct Loaders<B: AutodiffBackend> {
    train: TrainLoader<B>,
    valid: EpochLoader<B::InnerBackend>,
    skipped: SkippedImages,
}

/// The training loader (images, or cached features, which are computed here) cut into `parts`
/// per batch, and the validation loader (empty unless the run validates).
fn build_loaders<B: AutodiffBackend>(
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
type Sgd<B> =
    OptimizerAdaptor<burn::optim::Sgd<<B as AutodiffBackend>::InnerBackend>, MocoopModel<B>, B>;

/// SGD with PyTorch's momentum (no dampening) and L2 weight decay.
fn optimiser<B: AutodiffBackend>(optim: &OptimConfig) -> Sgd<B> {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: optim.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig {
            penalty: optim.weight_decay,
        }))
        .init::<B, MocoopModel<B>>()
}

/// Where the loop starts: the model, optimiser and schedule, the journal, and the checkpoints
/// already on disk.
struct Start<B: AutodiffBackend> {
    model: MocoopModel<B>,
    optim: Sgd<B>,
    schedule: EpochSchedule,
    journal: Journal,
    saved: Vec<PathBuf>,
}

/// `start` moved to the run's newest intact checkpoint (none: the run starts over, its outputs
/// cleared).
fn resume_point<B: AutodiffBackend>(
    start: Start<B>,
    config: &TrainConfig,
    out: &Path,
    train: &TrainLoader<B>,
    quiet: bool,
    notes: &mut Vec<String>,
    device: &B::Device,
) -> Result<Start<B>, TrainError> {
    let scan = resume::scan(out)?;
    for damaged in &scan.damaged {
        eprintln!("warning: {damaged}");
    }
    let Some(point) = scan.latest else {
        notes.push("no checkpoint to resume from: the run starts at step 1".into());
        run::clear_outputs(out);
        return Ok(start);
    };
    let state = point.state.clone();
    let iters = start.journal.iters_per_epoch;
    if state.iters_per_epoch != iters {
        return Err(TrainError::Checkpoint(format!(
            "{}: the run had {} steps per epoch, the data now gives {iters} (did the dataset \
             change?)",
            point.path.display(),
            state.iters_per_epoch
        )));
    }
    if !quiet {
        eprintln!(
            "resuming from {} (step {})",
            point.path.display(),
            state.step
        );
    }
    let (mut model, optim) = restore(start.model, start.optim, point, config.ln_tuning, device)?;
    model.state = StepState {
        steps: state.step as u64,
        loss_scale: state.loss_scale.or(model.state.loss_scale),
    };
    let epochs_done = state.epochs_done();
    train
        .cursor()
        .start_at(epochs_done as u64, state.steps_into_epoch());
    let journal = Journal {
        iters_per_epoch: iters,
        step: state.step,
        sums: state.partial,
        epochs: journal::kept_epochs(out, epochs_done)?,
    };
    Ok(Start {
        model,
        optim,
        schedule: start.schedule.after(state.step),
        journal,
        saved: scan.intact,
    })
}

/// Runs the epochs left through burn-train (its learner, metrics and display) with this crate's
/// loop; returns the trained model and the loop's state.
fn run_epochs<B: AutodiffBackend>(
    config: &TrainConfig,
    out: &Path,
    options: &TrainOptions,
    start: Start<B>,
    loaders: Loaders<B>,
    devices: Vec<B::Device>,
    errors: DataErrors,
) -> (MocoopModel<B::InnerBackend>, RunState) {
    let epochs_done = start.journal.epochs_done();
    let saver = CheckpointSaver::new(
        out,
        config.ln_tuning,
        checkpoint_metadata(config),
        options.keep_checkpoints,
        start.saved,
    );
    let run_loop = Arc::new(RunLoop::new(
        devices,
        start.journal,
        saver,
        options.stop.clone(),
        errors,
    ));
    if epochs_done >= config.optim.epochs {
        return (start.model.valid(), run_loop.finish());
    }
    let mut training = metrics(
        SupervisedTraining::new(out, loaders.train.shared(), Arc::new(loaders.valid)),
        config,
    )
    .with_application_logger(None)
    .num_epochs(config.optim.epochs)
    .renderer(BarRenderer::new(options.quiet))
    .with_training_strategy(TrainingStrategy::Custom(run_loop.clone()));
    if epochs_done > 0 {
        training = training.checkpoint(epochs_done);
    }
    let result = training.launch(Learner::new(start.model, start.optim, start.schedule));
    drop(result.renderer);
    (result.model, run_loop.finish())
}

/// The learning components of a run.
type Components<B> = LearningComponentsMarker<B, EpochSchedule, MocoopModel<B>, Sgd<B>>;

/// Registers the metrics burn-train shows: the loss and each weighted term, accuracy, the
/// learning rate, the router's entropy and loads, and the validation loss and accuracy.
fn metrics<B: AutodiffBackend>(
    training: SupervisedTraining<Components<B>>,
    config: &TrainConfig,
) -> SupervisedTraining<Components<B>> {
    let mut training = training
        .metric_train_numeric(ValueMetric::new("Loss", "loss"))
        .metric_train_numeric(ValueMetric::new("CE", "ce"))
        .metric_train_numeric(ValueMetric::accuracy())
        .metric_train_numeric(LrMetric::default());
    let l = &config.loss;
    for (weight, name, key) in [
        (l.lambda_text, "L_text", "text"),
        (l.lambda_gate, "L_gate", "gate"),
        (l.lambda_lb, "L_lb", "lb"),
        (l.lambda_kd, "L_kd", "kd"),
    ] {
        if weight > 0.0 {
            training = training.metric_train_numeric(ValueMetric::new(name, key));
        }
    }
    if config.mixture.router {
        training = training
            .metric_train_numeric(ValueMetric::new("Router entropy", "router_entropy"))
            .metric_train(ExpertLoadMetric::default());
    }
    if config.validate {
        training = training
            .metric_valid_numeric(ValueMetric::new("Loss", "loss"))
            .metric_valid_numeric(ValueMetric::accuracy());
    }
    training
}

/// The loop's state if it trained every epoch; otherwise the error saying why it stopped (after
/// a non-finite loss, the last good checkpoint becomes the run's final one).
fn stopped(state: RunState, out: &Path) -> Result<RunState, TrainError> {
    match state.outcome {
        Outcome::Finished => Ok(state),
        Outcome::NonFinite(bad) => {
            let kept = match state.saver.last() {
                Some(path) => {
                    let _ = std::fs::copy(path, run::checkpoint_path(out));
                    format!("the last good checkpoint is {}", path.display())
                }
                None => "no epoch finished, so there is no checkpoint".to_string(),
            };
            let terms = bad
                .values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            Err(TrainError::NonFinite {
                step: bad.step,
                epoch: bad.epoch,
                terms,
                kept,
            })
        }
        Outcome::Failed(error) => Err(TrainError::Run(format!("training stopped: {error}"))),
        Outcome::Interrupted { step, checkpoint } => Err(TrainError::Interrupted {
            step,
            checkpoint: checkpoint
                .map_or_else(|| "no checkpoint".into(), |p| p.display().to_string()),
            run: out.display().to_string(),
        }),
    }
}

/// The note listing the training images left out as unreadable, if any.
fn skipped_note(skipped: &SkippedImages) -> Option<String> {
    let skipped = skipped.list();
    if skipped.is_empty() {
        return None;
    }
    let listed: Vec<String> = skipped
        .iter()
        .map(|(path, why)| format!("  {}: {why}", path.display()))
        .collect();
    Some(format!(
        "skipped {} unreadable training image(s) (--skip-bad-images):\n{}",
        skipped.len(),
        listed.join("\n")
    ))
}

/// The report of a run that already finished (intact final checkpoint and results), or `None`.
fn finished(
    run: &Path,
    config: &TrainConfig,
    options: &TrainOptions,
) -> Result<Option<TrainReport>, TrainError> {
    let results_path = run.join(run::RESULTS_FILE);
    let trained = config.method == crate::Method::ZeroShot
        || checkpoint::read(&run::checkpoint_path(run)).is_ok();
    if !trained || (options.evaluate && !results_path.is_file()) {
        return Ok(None);
    }
    let results = if options.evaluate {
        let text =
            std::fs::read_to_string(&results_path).map_err(|e| TrainError::io(&results_path, e))?;
        match serde_json::from_str::<RunResults>(&text) {
            Ok(results) => Some(results),
            Err(_) => return Ok(None),
        }
    } else {
        None
    };
    let epochs = journal::kept_epochs(run, config.optim.epochs)?;
    Ok(Some(TrainReport {
        run: run.to_path_buf(),
        steps: 0,
        epochs,
        results,
        notes: vec![format!(
            "{} had already finished: nothing to resume",
            run.display()
        )],
    }))
}

/// Puts a checkpoint's trainable tensors and optimiser state into a freshly built model and
/// optimiser.
fn restore<B: AutodiffBackend, O, T>(
    model: MocoopModel<B>,
    optim: O,
    point: ResumePoint,
    ln_tuning: bool,
    device: &B::Device,
) -> Result<(MocoopModel<B>, O), TrainError>
where
    O: burn::optim::Optimizer<
            MocoopModel<B>,
            B,
            Record = hashbrown::HashMap<burn::module::ParamId, T>,
        >,
    T: burn::record::Record<B>,
{
    let path = point.path.display().to_string();
    let mut checkpoint = point.checkpoint;
    let mut model = model;
    model.mixture = model
        .mixture
        .load_tensors(&mut checkpoint.tensors, device)
        .map_err(|e| TrainError::Checkpoint(format!("{path}: {e}")))?;
    if ln_tuning {
        model.clip = checkpoint::load_visual_ln(model.clip, &mut checkpoint.tensors, device)?;
    }
    let bytes = &checkpoint.blobs[resume::OPTIMIZER_BLOB];
    let ids = resume::param_ids(&model, ln_tuning);
    let optim = resume::restore_optimizer(optim, bytes, &point.state.param_ids, &ids, device)
        .map_err(|e| TrainError::Checkpoint(format!("{path}: {e}")))?;
    Ok((model, optim))
}
