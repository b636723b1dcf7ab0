//! A training run end to end: data, model, burn-train `Learner`, checkpoints, final evaluation,
//! in named stages (`build`, `restart`, `launch`).

mod build;
mod launch;
mod restart;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::DataLoader;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Method, TrainConfig};
use crate::data::{DataErrors, EpochCursor, EpochLoader, SkippedImages};
use crate::eval::{EvalTarget, TrainedRun, evaluate_run, template_groups, training_data};
use crate::features::FeatureLoader;
use crate::journal::{EpochRecord, Journal};
use crate::run::{self, RunResults};
use crate::schedule::EpochSchedule;
use crate::{TrainError, checkpoint};
use build::{build_loaders, build_model, iterations, optimiser, split_devices};
use launch::{run_epochs, stopped};
use restart::{Start, finished, resume_point};

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
    /// The caller's progress bars (e.g. a protocol grid's overall bar): the epoch bar is drawn
    /// under them and the epoch lines above them. `None`: the bar stands alone.
    pub progress: Option<indicatif::MultiProgress>,
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
            progress: None,
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
