#![warn(missing_docs)]
//! Prompt learning on Burn: the method interface ([`learner`]) and the methods ([`methods`]:
//! MoCoOp, CoOp, zero-shot CLIP), one trainer for all of them (the burn-train `Learner` stepped
//! by this crate's loop, the epoch schedule, checkpoints of the trainable tensors only, resuming),
//! run directories, and evaluation of any method's runs through one code path.

pub mod checkpoint;
pub mod config;
pub(crate) mod data;
pub mod eval;
pub(crate) mod features;
pub mod hand_made;
pub mod image_parts;
pub mod inputs;
pub(crate) mod journal;
pub mod learner;
pub mod loss_scale;
pub(crate) mod losses;
pub mod methods;
pub(crate) mod metrics;
pub mod model;
pub mod protocol;
pub mod recipe;
pub(crate) mod renderer;
pub(crate) mod resume;
pub mod run;
pub(crate) mod run_loop;
pub(crate) mod saver;
pub(crate) mod schedule;
pub(crate) mod step;
pub(crate) mod trainer;

use std::path::Path;

pub use config::{LossConfig, Method, OptimConfig, TrainConfig, epoch_lr};
pub use eval::{EvalSplit, EvalTarget, TrainedRun, evaluate_run};
pub use journal::EpochRecord;
pub use learner::{
    ImageClassifier, LearnerSetup, LossTerm, Prediction, PromptLearner, TrainedLearner,
};
pub use methods::{resume, train};
pub use model::{ClassSetup, MocoopModel, StepTerms};
pub use recipe::{LrScaling, Recipe};
pub use run::{RunResults, SplitResult};
pub use step::StepOutput;
pub use trainer::{DeviceSplit, TrainOptions, TrainReport};

/// Why training or evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint does not fit.
    #[error("{0}")]
    Checkpoint(String),
    /// Prompts could not be built.
    #[error(transparent)]
    Prompt(#[from] mocoop_model::prompt::PromptError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] mocoop_data::DataError),
    /// The settings are inconsistent.
    #[error("{0}")]
    Config(String),
    /// The run directory is not usable.
    #[error("{0}")]
    Run(String),
    /// The loss became NaN or infinite.
    #[error(
        "training stopped: non-finite loss at step {step} (epoch {epoch}; terms {terms}); {kept}"
    )]
    NonFinite {
        /// The 1-based step.
        step: usize,
        /// The 1-based epoch.
        epoch: usize,
        /// The loss terms at that step.
        terms: String,
        /// Which checkpoint is the last good one.
        kept: String,
    },
    /// The user stopped the run; it can be resumed.
    #[error(
        "interrupted after step {step}; saved {checkpoint}; continue with `mocoop train --resume \
         {run}`"
    )]
    Interrupted {
        /// Steps taken.
        step: usize,
        /// The checkpoint written after the last step.
        checkpoint: String,
        /// The run directory.
        run: String,
    },
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
