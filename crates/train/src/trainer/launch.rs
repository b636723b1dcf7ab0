//! Launching the epochs through burn-train, and what the loop's end means for the run.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use burn::train::{Learner, LearningComponentsMarker, SupervisedTraining, TrainingStrategy};

use super::build::{Loaders, Sgd};
use super::restart::Start;
use super::{TrainOptions, checkpoint_metadata};
use crate::TrainError;
use crate::config::TrainConfig;
use crate::data::DataErrors;
use crate::learner::PromptLearner;
use crate::metrics::{ExpertLoadMetric, LrMetric, ValueMetric};
use crate::renderer::BarRenderer;
use crate::run;
use crate::run_loop::{Outcome, RunLoop, RunState};
use crate::saver::CheckpointSaver;
use crate::schedule::EpochSchedule;

/// Runs the epochs left through burn-train (its learner, metrics and display) with this crate's
/// loop; returns the trained model and the loop's state.
pub(super) fn run_epochs<B: AutodiffBackend, M: PromptLearner<B>>(
    config: &TrainConfig,
    out: &Path,
    options: &TrainOptions,
    start: Start<B, M>,
    loaders: Loaders<B>,
    devices: Vec<B::Device>,
    errors: DataErrors,
) -> (M::InnerModule, RunState) {
    let epochs_done = start.journal.epochs_done();
    let saver = CheckpointSaver::new(
        out,
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
        start.model.state(),
    ));
    if epochs_done >= config.optim.epochs {
        return (start.model.valid(), run_loop.finish());
    }
    let mut training = metrics(
        SupervisedTraining::new(out, loaders.train.shared(), Arc::new(loaders.valid)),
        &start.model,
        config.validate,
    )
    .with_application_logger(None)
    .num_epochs(config.optim.epochs)
    .renderer(BarRenderer::new(options.quiet, options.progress.clone()))
    .with_training_strategy(TrainingStrategy::Custom(run_loop.clone()));
    if epochs_done > 0 {
        training = training.checkpoint(epochs_done);
    }
    let result = training.launch(Learner::new(start.model, start.optim, start.schedule));
    drop(result.renderer);
    (result.model, run_loop.finish())
}

/// The learning components of a run.
type Components<B, M> = LearningComponentsMarker<B, EpochSchedule, M, Sgd<B, M>>;

/// Registers the metrics burn-train shows: the loss, the cross-entropy and each of the method's
/// loss terms, accuracy, the learning rate, the router's entropy and loads (a method with routed
/// experts), and, when the run validates, the validation loss and accuracy.
fn metrics<B: AutodiffBackend, M: PromptLearner<B>>(
    training: SupervisedTraining<Components<B, M>>,
    model: &M,
    validate: bool,
) -> SupervisedTraining<Components<B, M>> {
    let mut training = training
        .metric_train_numeric(ValueMetric::new("Loss", "loss"))
        .metric_train_numeric(ValueMetric::new("CE", "ce"))
        .metric_train_numeric(ValueMetric::accuracy())
        .metric_train_numeric(LrMetric::default());
    for term in model.loss_terms() {
        training = training.metric_train_numeric(ValueMetric::new(term.name, term.key));
    }
    if model.routed_experts().is_some() {
        training = training
            .metric_train_numeric(ValueMetric::new("Router entropy", "router_entropy"))
            .metric_train(ExpertLoadMetric::default());
    }
    if validate {
        training = training
            .metric_valid_numeric(ValueMetric::new("Loss", "loss"))
            .metric_valid_numeric(ValueMetric::accuracy());
    }
    training
}

/// The loop's state if it trained every epoch; otherwise the error saying why it stopped (after
/// a non-finite loss, the last good checkpoint becomes the run's final one).
pub(super) fn stopped(state: RunState, out: &Path) -> Result<RunState, TrainError> {
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
