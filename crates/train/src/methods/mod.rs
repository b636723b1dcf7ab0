//! The methods, and the registry that names them: each method is one module implementing
//! `learner::PromptLearner` (training) and `learner::TrainedLearner` (inference), and is
//! registered here in [`fit`] (which model trains a run of it) and [`TrainedRun::load`] (how a
//! finished run of it is read back). KgCoOp and ProGrad are CoOp's soft prompt with a term
//! against the hand-made prompt (`LossConfig::kgcoop`, `LossConfig::prograd`), and LASP is CoOp's
//! soft prompt with the text bias and the text loss against every template (`LossConfig::lasp`),
//! so they train and classify through the mixture's module; CoCoOp has a module of its own
//! (`cocoop.rs`), and so do the deep-prompt methods VPT, IVLP, MaPLe and PromptSRC (`deep/`).

pub mod cached;
pub mod cocoop;
pub mod deep;
pub mod mixture;
mod named;
pub mod zero_shot;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::TensorData;
use burn::tensor::backend::{AutodiffBackend, Backend};

use mocoop_model::Clip;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Method, TrainConfig};
use crate::eval::{TrainedRun, final_checkpoint};
use crate::learner::TrainedLearner;
use crate::model::MocoopModel;
use crate::trainer::{self, TrainOptions, TrainReport};
use crate::{TrainError, run};
use cocoop::{CocoopModel, CocoopRun};
use deep::{DeepModel, DeepRun};
use mixture::MixtureRun;
use zero_shot::ZeroShotRun;

/// Trains (or, for zero-shot CLIP, only evaluates) the run described by `config` into `out`.
///
/// With several `devices` and [`trainer::DeviceSplit::Batch`], every step's batch is split
/// across them (data parallel, burn-train's multi-device strategy): each computes the loss of its
/// part, weighted by the part's share of the batch, and the summed gradients are applied once on
/// the first device, which also holds the model between steps and runs everything else. The
/// result is the one-device result up to floating-point summation order (the load-balancing loss
/// `L_lb`, a statistic of the whole batch, is computed per part). With
/// [`trainer::DeviceSplit::Classes`], the first device runs every step and the others encode
/// shares of its prompts. `clip` must be on the first device.
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

/// The registry's training side: the model that trains a run of each method.
fn fit<B: AutodiffBackend>(
    config: TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    out: &Path,
    options: &TrainOptions,
    devices: &[B::Device],
    resuming: bool,
) -> Result<TrainReport, TrainError> {
    let run = trainer::Run {
        config,
        tokenizer,
        out,
        options,
        devices,
        resuming,
    };
    match run.config.method {
        Method::Mocoop | Method::Coop | Method::Kgcoop | Method::Prograd | Method::Lasp => {
            trainer::fit::<B, MocoopModel<B>>(run, clip)
        }
        Method::Cocoop => trainer::fit::<B, CocoopModel<B>>(run, clip),
        Method::Vpt | Method::Ivlp | Method::Maple | Method::Promptsrc => {
            trainer::fit::<B, DeepModel<B>>(run, clip)
        }
        Method::ZeroShot => {
            let clip = clip.with_precision(run.config.precision).valid();
            let learner = ZeroShotRun::new(&run.config, clip);
            trainer::evaluate_only(run, Box::new(learner))
        }
    }
}

impl<B: Backend> TrainedRun<B> {
    /// Loads `run`'s configuration and checkpoint onto `clip` (the CLIP the run was trained
    /// with). With `expected`, a run of another method is an error. The registry's inference
    /// side: how a finished run of each method is read back.
    pub fn load(
        run_dir: &Path,
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        expected: Option<Method>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let config = run::read_config(run_dir, expected)?;
        let clip = clip.with_precision(config.precision);
        let learner: Box<dyn TrainedLearner<B>> = match config.method {
            Method::ZeroShot => Box::new(ZeroShotRun::new(&config, clip)),
            Method::Cocoop => Box::new(from_checkpoint(run_dir, &config, |t| {
                CocoopRun::load(&config, clip, tokenizer, t, device)
            })?),
            Method::Mocoop | Method::Coop | Method::Kgcoop | Method::Prograd | Method::Lasp => {
                Box::new(from_checkpoint(run_dir, &config, |t| {
                    MixtureRun::load(&config, clip, tokenizer, t, device)
                })?)
            }
            Method::Vpt | Method::Ivlp | Method::Maple | Method::Promptsrc => {
                Box::new(from_checkpoint(run_dir, &config, |t| {
                    DeepRun::load(&config, clip, tokenizer, t, device)
                })?)
            }
        };
        Ok(Self {
            config,
            learner,
            dir: run_dir.to_path_buf(),
        })
    }
}

/// A trained method read from `run_dir`'s final checkpoint by `load`, which takes out the tensors
/// it uses: the checkpoint must be of the run's method, and hold no tensor left over.
fn from_checkpoint<L>(
    run_dir: &Path,
    config: &TrainConfig,
    load: impl FnOnce(&mut BTreeMap<String, TensorData>) -> Result<L, TrainError>,
) -> Result<L, TrainError> {
    let (path, mut ckpt) = final_checkpoint(run_dir, config)?;
    let method = ckpt.metadata.get("method").cloned().unwrap_or_default();
    if method != config.method.to_string() {
        return Err(TrainError::Run(format!(
            "{}: the checkpoint is from a {method} run but config.json describes a {} run",
            path.display(),
            config.method
        )));
    }
    let learner = load(&mut ckpt.tensors).map_err(|e| match e {
        TrainError::Checkpoint(m) => TrainError::Checkpoint(format!("{}: {m}", path.display())),
        other => other,
    })?;
    if !ckpt.tensors.is_empty() {
        return Err(TrainError::Checkpoint(format!(
            "{}: unexpected tensors {:?} for this run's configuration",
            path.display(),
            ckpt.tensors.keys().collect::<Vec<_>>()
        )));
    }
    Ok(learner)
}
