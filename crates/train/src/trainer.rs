//! A training run end to end: data, model, burn-train `Learner`, checkpoints, final evaluation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{ExecutionStrategy, Interrupter, Learner, MultiDeviceOptim, SupervisedTraining};

use mocoop_data::{ImageBatch, LoaderConfig};
use mocoop_model::Clip;
use mocoop_model::prompt::TextShard;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Method, OptimConfig, TrainConfig, epoch_lr};
use crate::data::{EpochCursor, EpochLoader};
use crate::eval::{EvalTarget, TrainedRun, evaluate_run, template_groups, training_data};
use crate::features::{FeatureCache, FeatureLoader};
use crate::loss_scale::LossScale;
use crate::metrics::{ExpertLoadMetric, LrMetric, ValueMetric};
use crate::model::{ClassSetup, MocoopModel};
use crate::monitor::{EpochRecord, METRICS_FILE, Monitor, RunSink};
use crate::renderer::BarRenderer;
use crate::resume::{self, ResumePoint};
use crate::run::{self, RunResults};
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

/// [`train`] (a new run) or [`resume`] (`resuming`).
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
    let groups = template_groups(config.data.groups_file.as_deref(), &config.data.dataset)?;
    if config.method == Method::Mocoop && groups.groups().len() != config.mixture.num_experts() {
        return Err(TrainError::Config(format!(
            "the configuration has {} experts but dataset '{}' has {} template groups",
            config.mixture.num_experts(),
            config.data.dataset,
            groups.groups().len()
        )));
    }
    if !resuming {
        run::create(out, &config, options.overwrite)?;
    }
    let target = EvalTarget {
        dataset: None,
        split: None,
        batch_size: options.eval_batch_size,
        workers: config.data.workers,
    };

    if config.method == Method::ZeroShot {
        let trained = TrainedRun {
            config: config.clone(),
            clip: clip.valid(),
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
        return Ok(TrainReport {
            run: out.to_path_buf(),
            steps: 0,
            epochs: Vec::new(),
            results,
            notes,
        });
    }

    let size = clip.config().vision.image_size as u32;
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

    let data = &config.data;
    let train_config = LoaderConfig {
        workers: data.workers,
        skip_bad_images: data.skip_bad_images,
        ..LoaderConfig::train(size, data.batch_size, data.seed)
    };
    let iters = dataset.train.len().div_ceil(data.batch_size);
    if iters == 0 {
        return Err(TrainError::Config(format!(
            "dataset '{}' has no training images",
            data.dataset
        )));
    }
    let parts = match options.split {
        DeviceSplit::Batch => devices.len(),
        DeviceSplit::Classes => {
            model.split_text(devices);
            let rows = model.prompts.rows();
            let shards = &model.text_shards;
            let shares: Vec<String> = std::iter::once(TextShard::first_device_rows(shards, rows))
                .chain(shards.iter().map(TextShard::rows))
                .map(|n| n.to_string())
                .collect();
            notes.push(if shares.len() > 1 {
                format!(
                    "each step's {rows} prompts were encoded on {} devices, in shares of {} \
                     prompts (about equal in tokens)",
                    shares.len(),
                    shares.join(", ")
                )
            } else {
                "the prompts were not split by class: there was one device".to_string()
            });
            1
        }
    };
    if parts > data.batch_size.min(dataset.train.len()) {
        return Err(TrainError::Config(format!(
            "{parts} devices need a batch size and a training set of at least {parts} images \
             each (batch size {}, {} training images)",
            data.batch_size,
            dataset.train.len()
        )));
    }
    let interrupter = Interrupter::new();
    let sink = RunSink {
        dir: out.to_path_buf(),
        ln_tuning: config.ln_tuning,
        metadata: checkpoint_metadata(&config),
        keep: options.keep_checkpoints,
    };
    let monitor = Monitor::new(iters, Some(interrupter.clone()), Some(sink));
    if config.precision.needs_loss_scaling() {
        monitor.scale_loss(LossScale::default());
    }
    if let Some(stop) = &options.stop {
        monitor.stop_when(stop.clone());
    }
    model.monitor = monitor.clone();
    let (train_loader, skipped) = if config.cached_views > 0 {
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
        let loader = FeatureLoader::new(
            &data.dataset,
            dataset.train.clone(),
            train_config,
            cache,
            device.clone(),
        )
        .split_across(parts);
        (TrainLoader::Features(loader), skipped)
    } else {
        let loader = EpochLoader::<B>::new(
            &data.dataset,
            dataset.train.clone(),
            train_config,
            device.clone(),
            Some(monitor.clone()),
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
    let valid_loader = EpochLoader::<B::InnerBackend>::new(
        &data.dataset,
        valid_items,
        valid_config,
        device.clone(),
        Some(monitor.clone()),
    );

    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: config.optim.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig {
            penalty: config.optim.weight_decay,
        }))
        .init::<B, MocoopModel<B>>();
    let mut schedule = EpochSchedule::new(config.optim.clone(), iters);
    let mut epochs_done = 0;
    if resuming {
        let scan = resume::scan(out)?;
        for damaged in &scan.damaged {
            eprintln!("warning: {damaged}");
        }
        match scan.latest {
            Some(point) => {
                let state = point.state.clone();
                if state.iters_per_epoch != iters {
                    return Err(TrainError::Checkpoint(format!(
                        "{}: the run had {} steps per epoch, the data now gives {iters} (did the \
                         dataset change?)",
                        point.path.display(),
                        state.iters_per_epoch
                    )));
                }
                if !options.quiet {
                    eprintln!(
                        "resuming from {} (step {})",
                        point.path.display(),
                        state.step
                    );
                }
                let ln_tuning = config.ln_tuning;
                (model, optim) = restore(model, optim, point, ln_tuning, device)?;
                schedule = schedule.after(state.step);
                epochs_done = state.epochs_done();
                let records = kept_epochs(out, epochs_done)?;
                monitor.resume_from(&state, records, scan.intact);
                train_loader
                    .cursor()
                    .start_at(epochs_done as u64, state.steps_into_epoch());
            }
            None => {
                notes.push("no checkpoint to resume from: the run starts at step 1".into());
                run::clear_outputs(out);
            }
        }
    }

    let mut training = SupervisedTraining::new(out, train_loader.shared(), Arc::new(valid_loader))
        .with_application_logger(None)
        .with_interrupter(interrupter)
        .num_epochs(config.optim.epochs)
        .renderer(BarRenderer::new(options.quiet))
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
    if epochs_done > 0 {
        training = training.checkpoint(epochs_done);
    }
    if parts > 1 {
        let strategy =
            ExecutionStrategy::multi(devices.to_vec(), MultiDeviceOptim::OptimMainDevice);
        training = training.with_training_strategy(strategy.into());
    }
    let model = if epochs_done >= config.optim.epochs {
        model.valid()
    } else {
        let result = training.launch(Learner::new(model, optim, schedule));
        drop(result.renderer);
        result.model
    };

    if let Some(bad) = monitor.non_finite() {
        let kept = match monitor.last_checkpoint() {
            Some(path) => {
                let _ = std::fs::copy(&path, run::checkpoint_path(out));
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
        return Err(TrainError::NonFinite {
            step: bad.step,
            epoch: bad.epoch,
            terms,
            kept,
        });
    }
    if let Some(error) = monitor.error() {
        return Err(TrainError::Run(format!("training stopped: {error}")));
    }
    if let Some(stopped) = monitor.interrupted() {
        return Err(TrainError::Interrupted {
            step: stopped.step,
            checkpoint: stopped
                .checkpoint
                .map_or_else(|| "no checkpoint".into(), |p| p.display().to_string()),
            run: out.display().to_string(),
        });
    }

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
        let results = evaluate_run(&trained, tokenizer, &target, device)?;
        run::write_json(&out.join(run::RESULTS_FILE), &results)?;
        Some(results)
    } else {
        None
    };
    let skipped = skipped.list();
    if !skipped.is_empty() {
        let listed: Vec<String> = skipped
            .iter()
            .map(|(path, why)| format!("  {}: {why}", path.display()))
            .collect();
        notes.push(format!(
            "skipped {} unreadable training image(s) (--skip-bad-images):\n{}",
            skipped.len(),
            listed.join("\n")
        ));
    }
    if let Some(scale) = monitor.loss_scale().filter(|s| s.skipped > 0) {
        notes.push(format!(
            "f16: {} step(s) skipped for overflowing gradients while the loss scale came down \
             (now {})",
            scale.skipped, scale.scale
        ));
    }
    Ok(TrainReport {
        run: out.to_path_buf(),
        steps: monitor.steps(),
        epochs: monitor.epochs(),
        results,
        notes,
    })
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
    let epochs = kept_epochs(run, config.optim.epochs)?;
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

/// The records of epochs `1..=epochs` in `metrics.jsonl`; the file is rewritten without later (or
/// unreadable, e.g. half-written) lines, so that a resumed run appends to a clean log.
fn kept_epochs(run: &Path, epochs: usize) -> Result<Vec<EpochRecord>, TrainError> {
    let path = run.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let mut by_epoch = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Ok(record) = serde_json::from_str::<EpochRecord>(line)
            && record.epoch <= epochs
        {
            by_epoch.insert(record.epoch, (line.to_string(), record));
        }
    }
    let kept: String = by_epoch
        .values()
        .map(|(line, _)| format!("{line}\n"))
        .collect();
    if kept != text {
        mocoop_model::atomic::write_atomic(&path, kept.as_bytes())
            .map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(by_epoch.into_values().map(|(_, r)| r).collect())
}
