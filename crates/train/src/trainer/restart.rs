//! Continuing a run: where a resumed run starts, and the report of one that already finished.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;

use super::build::Sgd;
use super::{TrainLoader, TrainOptions, TrainReport};
use crate::config::TrainConfig;
use crate::journal::{self, Journal};
use crate::learner::PromptLearner;
use crate::model::StepState;
use crate::resume::{self, ResumePoint};
use crate::run::{self, RunResults};
use crate::schedule::EpochSchedule;
use crate::{TrainError, checkpoint};

/// Where the loop starts: the model, optimiser and schedule, the journal, and the checkpoints
/// already on disk.
pub(super) struct Start<B: AutodiffBackend, M: PromptLearner<B>> {
    pub(super) model: M,
    pub(super) optim: Sgd<B, M>,
    pub(super) schedule: EpochSchedule,
    pub(super) journal: Journal,
    pub(super) saved: Vec<PathBuf>,
}

/// `start` moved to the run's newest intact checkpoint (none: the run starts over, its outputs
/// cleared).
pub(super) fn resume_point<B: AutodiffBackend, M: PromptLearner<B>>(
    start: Start<B, M>,
    out: &Path,
    train: &TrainLoader<B>,
    quiet: bool,
    notes: &mut Vec<String>,
    device: &B::Device,
) -> Result<Start<B, M>, TrainError> {
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
    let (mut model, optim) = restore(start.model, start.optim, point, device)?;
    model.set_state(StepState {
        steps: state.step as u64,
        loss_scale: state.loss_scale.or(model.state().loss_scale),
    });
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

/// The report of a run that already finished (intact final checkpoint and results), or `None`.
pub(super) fn finished(
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
fn restore<B: AutodiffBackend, M: PromptLearner<B>, O, T>(
    model: M,
    optim: O,
    point: ResumePoint,
    device: &B::Device,
) -> Result<(M, O), TrainError>
where
    O: burn::optim::Optimizer<M, B, Record = hashbrown::HashMap<burn::module::ParamId, T>>,
    T: burn::record::Record<B>,
{
    let path = point.path.display().to_string();
    let in_file = |e: TrainError| TrainError::Checkpoint(format!("{path}: {e}"));
    let mut checkpoint = point.checkpoint;
    let model = model
        .load_tensors(&mut checkpoint.tensors, device)
        .map_err(in_file)?;
    let bytes = &checkpoint.blobs[resume::OPTIMIZER_BLOB];
    let ids = model.param_ids();
    let optim = resume::restore_optimizer(optim, bytes, &point.state.param_ids, &ids, device)
        .map_err(in_file)?;
    Ok((model, optim))
}
