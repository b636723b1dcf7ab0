//! A training run end to end, for any method ([`PromptLearner`]): data, model, burn-train
//! `Learner`, checkpoints, final evaluation, in named stages (`build`, `restart`, `launch`).

mod build;
mod launch;
mod restart;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::data::dataloader::DataLoader;
use burn::tensor::backend::{AutodiffBackend, Backend};

use mocoop_data::{Dataset, ImageBatch};
use mocoop_model::Clip;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Method, TrainConfig};
use crate::data::{DataErrors, EpochCursor, EpochLoader, SkippedImages};
use crate::eval::{EvalTarget, TrainedRun, evaluate_run};
use crate::features::FeatureLoader;
use crate::inputs::{template_groups_from, training_data};
use crate::journal::{EpochRecord, Journal};
use crate::learner::{PromptLearner, TrainedLearner};
use crate::run::{self, RunResults};
use crate::run_loop::RunState;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceSplit {
    /// Data parallel: each device gets a part of every batch and runs the whole step on it,
    /// text side included (burn-train's multi-device strategy).
    #[default]
    Batch,
    /// The text side split by class: the first device runs the step, and every device encodes a
    /// share of the prompts (see [`PromptLearner::split_text_by_class`]; MoCoOp and CoOp split their
    /// `E × C` prompts). For many classes, where
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

/// A run to train (or continue): what every method's training starts from.
pub(crate) struct Run<'a, B: AutodiffBackend> {
    /// The run's configuration.
    pub(crate) config: TrainConfig,
    /// The tokenizer of the run's CLIP.
    pub(crate) tokenizer: &'a ClipTokenizer,
    /// The run directory.
    pub(crate) out: &'a Path,
    /// How the run behaves beyond its configuration.
    pub(crate) options: &'a TrainOptions,
    /// The devices to train on, the model's first.
    pub(crate) devices: &'a [B::Device],
    /// Whether an existing run is continued.
    pub(crate) resuming: bool,
}

/// What a run has once its inputs are checked and its directory is ready.
struct Opened {
    dataset: Dataset,
    groups: TemplateGroups,
    notes: Vec<String>,
}

/// The first stage of every run: checks, the report of a run that already finished (`Err`), or
/// the training data and template groups with the run directory created.
fn open<B: AutodiffBackend>(run: &Run<'_, B>) -> Result<Result<Opened, TrainReport>, TrainError> {
    let config = &run.config;
    config.validate().map_err(TrainError::Config)?;
    if run.devices.is_empty() {
        return Err(TrainError::Config("no device to train on".into()));
    }
    if run.resuming
        && let Some(report) = finished(run.out, config, run.options)?
    {
        return Ok(Err(report));
    }
    let (dataset, note) = training_data(&config.data)?;
    let groups = checked_groups(config)?;
    if !run.resuming {
        run::create(run.out, config, run.options.overwrite)?;
    }
    Ok(Ok(Opened {
        dataset,
        groups,
        notes: note.into_iter().collect(),
    }))
}

/// Trains the run with method model `M`, in stages: checks, the model, the device split, the
/// loaders, the optimiser, the resume point, the loop, the final checkpoint and the evaluation.
pub(crate) fn fit<B, M>(run: Run<'_, B>, clip: Clip<B>) -> Result<TrainReport, TrainError>
where
    B: AutodiffBackend,
    M: PromptLearner<B>,
{
    check_tower(&run.config, &clip)?;
    let Opened {
        dataset,
        groups,
        mut notes,
    } = match open(&run)? {
        Ok(opened) => opened,
        Err(report) => return Ok(report),
    };
    let Run {
        config,
        tokenizer,
        out,
        options,
        devices,
        resuming,
    } = run;
    let device = &devices[0];
    let clip = clip.with_precision(config.precision);
    let mut model: M = build_model(&config, clip, tokenizer, &groups, &dataset, options, device)?;
    let iters = iterations(&config, &dataset)?;
    model.set_steps_per_epoch(iters);
    let parts = split_devices(&mut model, options.split, devices, &mut notes)?;
    check_parts(parts, &config, &dataset)?;
    let errors = DataErrors::default();
    let loaders = build_loaders(
        &config, &dataset, &mut model, parts, options, device, &errors,
    )?;
    let start = Start {
        model,
        optim: optimiser::<B, M>(&config.optim),
        schedule: EpochSchedule::new(config.optim.clone(), iters),
        journal: Journal::new(iters),
        saved: Vec::new(),
    };
    let start = if resuming {
        let train = &loaders.train;
        resume_point(start, out, train, options.quiet, &mut notes, device)?
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
    let trained = M::into_trained(model);
    write_final_checkpoint(&config, trained.as_ref(), out)?;
    let results = conclude(config, trained, tokenizer, out, options, device)?;
    notes.extend(skipped_note(&skipped));
    notes.extend(loss_scale_note(&state));
    Ok(TrainReport {
        run: out.to_path_buf(),
        steps: state.journal.step,
        epochs: state.journal.epochs,
        results,
        notes,
    })
}

/// LayerNorm tuning needs an image tower with LayerNorms (a ViT): an error before the run
/// directory is created otherwise.
fn check_tower<B: AutodiffBackend>(config: &TrainConfig, clip: &Clip<B>) -> Result<(), TrainError> {
    if config.ln_tuning && clip.vision.transformer().is_none() {
        return Err(TrainError::Config(
            "LayerNorm tuning (--ln-tuning true, MoCoOp's default) trains the image encoder's \
             LayerNorms, and a ResNet image tower has none: pass --ln-tuning false"
                .into(),
        ));
    }
    Ok(())
}

/// A batch cut into `parts` needs at least that many images per batch and in the training set.
fn check_parts(parts: usize, config: &TrainConfig, dataset: &Dataset) -> Result<(), TrainError> {
    if parts > config.data.batch_size.min(dataset.train.len()) {
        return Err(TrainError::Config(format!(
            "{parts} devices need a batch size and a training set of at least {parts} images \
             each (batch size {}, {} training images)",
            config.data.batch_size,
            dataset.train.len()
        )));
    }
    Ok(())
}

/// The run's `checkpoint.safetensors`: the trained tensors, after the last epoch.
fn write_final_checkpoint<B: Backend>(
    config: &TrainConfig,
    trained: &dyn TrainedLearner<B>,
    out: &Path,
) -> Result<(), TrainError> {
    let mut metadata = checkpoint_metadata(config);
    metadata.insert("epoch".into(), config.optim.epochs.to_string());
    let path = run::checkpoint_path(out);
    checkpoint::write(&path, &trained.tensors(), &[], metadata)
}

/// The note on the f16 steps skipped while the loss scale came down, if any.
fn loss_scale_note(state: &RunState) -> Option<String> {
    let scale = state.model.loss_scale.filter(|s| s.skipped > 0)?;
    Some(format!(
        "f16: {} step(s) skipped for overflowing gradients while the loss scale came down (now {})",
        scale.skipped, scale.scale
    ))
}

/// A "run" of a method that trains nothing (zero-shot CLIP): it is evaluated when asked.
pub(crate) fn evaluate_only<B: AutodiffBackend>(
    run: Run<'_, B>,
    learner: Box<dyn TrainedLearner<B::InnerBackend>>,
) -> Result<TrainReport, TrainError> {
    let notes = match open(&run)? {
        Ok(opened) => opened.notes,
        Err(report) => return Ok(report),
    };
    let device = &run.devices[0];
    let results = conclude(
        run.config,
        learner,
        run.tokenizer,
        run.out,
        run.options,
        device,
    )?;
    Ok(TrainReport {
        run: run.out.to_path_buf(),
        steps: 0,
        epochs: Vec::new(),
        results,
        notes,
    })
}

/// The last stage: the trained run evaluated on its own test split(s) into `results.json`, when
/// the options ask for it.
fn conclude<B: Backend>(
    config: TrainConfig,
    learner: Box<dyn TrainedLearner<B>>,
    tokenizer: &ClipTokenizer,
    out: &Path,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Option<RunResults>, TrainError> {
    if !options.evaluate {
        return Ok(None);
    }
    let target = EvalTarget {
        dataset: None,
        split: None,
        batch_size: options.eval_batch_size,
        workers: config.data.workers,
    };
    let trained = TrainedRun {
        config,
        learner,
        dir: out.to_path_buf(),
    };
    let results = evaluate_run(&trained, tokenizer, &target, device)?;
    run::write_json(&out.join(run::RESULTS_FILE), &results)?;
    Ok(Some(results))
}

/// The run's template groups, one per expert for MoCoOp.
fn checked_groups(config: &TrainConfig) -> Result<TemplateGroups, TrainError> {
    let data = &config.data;
    let groups = template_groups_from(
        data.groups_file.as_deref(),
        &data.dataset,
        data.official_templates,
    )?;
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
