//! Launching the epochs through burn-train, and what the loop's end means for the run.

use std::path::Path;
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{Learner, LearningComponentsMarker, SupervisedTraining, TrainingStrategy};

use super::build::{Loaders, Sgd};
use super::restart::Start;
use super::{TrainOptions, checkpoint_metadata};
use crate::TrainError;
use crate::config::TrainConfig;
use crate::data::DataErrors;
use crate::metrics::{ExpertLoadMetric, LrMetric, ValueMetric};
use crate::model::MocoopModel;
use crate::renderer::BarRenderer;
use crate::run;
use crate::run_loop::{Outcome, RunLoop, RunState};
use crate::saver::CheckpointSaver;
use crate::schedule::EpochSchedule;

/// Runs the epochs left through burn-train (its learner, metrics and display) with this crate's
/// loop; returns the trained model and the loop's state.
pub(super) fn run_epochs<B: AutodiffBackend>(
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
