//! The resumable checkpoints of a run, written by the training loop: the trainable tensors, the
//! optimiser's state and where the run stands, with the oldest rotated out.
//!
//! burn-train's own checkpointer saves whole model records at epoch ends only; a run here saves
//! kilobytes of trainable tensors, also mid-epoch when it is interrupted, and re-keys the
//! optimiser state by tensor name on resume. The one thing only burn-train can reach is the
//! optimiser inside its `Learner`: [`optimizer_bytes`] borrows burn-train's checkpointer
//! machinery for that and nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::checkpoint::{
    AsyncCheckpointer, Checkpointer, CheckpointerError, CheckpointingAction, CheckpointingStrategy,
};
use burn::train::metric::store::EventStoreClient;
use burn::train::{Learner, LearningCheckpointer, LearningComponentsTypes};

use crate::TrainError;
use crate::checkpoint;
use crate::journal::Journal;
use crate::learner::PromptLearner;
use crate::resume::{self, ResumeState};

/// Where and how a run saves its checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSaver {
    /// The run directory.
    dir: PathBuf,
    /// Metadata stored in every checkpoint.
    metadata: HashMap<String, String>,
    /// Checkpoints kept (older ones are deleted).
    keep: usize,
    /// The checkpoints on disk, oldest first.
    saved: Vec<PathBuf>,
}

impl CheckpointSaver {
    /// Saves into `dir`'s checkpoint folder, keeping the newest `keep`; `saved` are the
    /// checkpoints already there (a resumed run), oldest first.
    pub fn new(
        dir: &Path,
        metadata: HashMap<String, String>,
        keep: usize,
        saved: Vec<PathBuf>,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            metadata,
            keep: keep.max(1),
            saved,
        }
    }

    /// Writes the checkpoint `name` (in the checkpoint folder) of `model` after `journal`'s
    /// steps, with the optimiser state `optimizer`, and deletes the oldest beyond the kept
    /// number. Returns the path relative to the run directory.
    pub fn save<B: AutodiffBackend, M: PromptLearner<B>>(
        &mut self,
        name: &str,
        model: &M,
        journal: &Journal,
        optimizer: Vec<u8>,
    ) -> Result<String, TrainError> {
        let relative = format!("{}/{name}", resume::CHECKPOINT_DIR);
        let path = self.dir.join(&relative);
        let tensors = model.tensors();
        let state = ResumeState {
            step: journal.step,
            iters_per_epoch: journal.iters_per_epoch,
            partial: journal.sums.clone(),
            param_ids: model
                .param_ids()
                .into_iter()
                .map(|(name, id)| (name, id.val()))
                .collect(),
            loss_scale: model.state().loss_scale,
        };
        let mut metadata = self.metadata.clone();
        metadata.insert("epoch".into(), journal.epochs_done().to_string());
        metadata.insert(
            resume::RESUME_KEY.into(),
            serde_json::to_string(&state).expect("serialisable"),
        );
        let blobs = [(resume::OPTIMIZER_BLOB.to_string(), optimizer)];
        checkpoint::write(&path, &tensors, &blobs, metadata)?;
        self.saved.push(path);
        while self.saved.len() > self.keep {
            let old = self.saved.remove(0);
            let _ = std::fs::remove_file(old);
        }
        Ok(relative)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last checkpoint written (or found when resuming).
    pub fn last(&self) -> Option<&Path> {
        self.saved.last().map(PathBuf::as_path)
    }
}

/// The state of the optimiser inside `learner`, as bytes (MessagePack of its record at full
/// precision, the format [`resume::restore_optimizer`] reads).
///
/// burn-train's `Learner` keeps its optimiser private and hands its record only to a
/// [`LearningCheckpointer`]; one is built here whose optimiser checkpointer keeps the bytes and
/// whose model and scheduler checkpointers discard theirs. Dropping it waits for its threads.
pub fn optimizer_bytes<LC: LearningComponentsTypes>(
    learner: &Learner<LC>,
    store: &EventStoreClient,
) -> Result<Vec<u8>, TrainError> {
    let slot = Capture::default();
    {
        let mut checkpointer = LearningCheckpointer::<LC>::new(
            AsyncCheckpointer::new(Discard),
            AsyncCheckpointer::new(slot.clone()),
            AsyncCheckpointer::new(Discard),
            Box::new(SaveNow),
        );
        checkpointer.checkpoint(learner, 0, store);
    }
    let taken = slot.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    taken
        .unwrap_or_else(|| Err("the optimiser state was not handed over".into()))
        .map_err(|e| TrainError::Checkpoint(format!("saving the optimiser state: {e}")))
}

/// Saves whenever asked: the loop decides when.
struct SaveNow;

impl CheckpointingStrategy for SaveNow {
    fn checkpointing(&mut self, _: usize, _: &EventStoreClient) -> Vec<CheckpointingAction> {
        vec![CheckpointingAction::Save]
    }
}

/// A checkpointer that throws its records away.
struct Discard;

/// The bytes of a captured record, or why it could not be serialised; `None` until one came.
type Captured = Option<Result<Vec<u8>, String>>;

/// A checkpointer that keeps the bytes of the last record it was given.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

impl<R: Record<B>, B: Backend> Checkpointer<R, B> for Discard {
    fn save(&self, _: usize, _: R) -> Result<(), CheckpointerError> {
        Ok(())
    }

    fn delete(&self, _: usize) -> Result<(), CheckpointerError> {
        Ok(())
    }

    fn restore(&self, _: usize, _: &B::Device) -> Result<R, CheckpointerError> {
        Err(CheckpointerError::Unknown("nothing is kept".into()))
    }
}

impl<R: Record<B>, B: Backend> Checkpointer<R, B> for Capture {
    fn save(&self, _: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(record, ())
            .map_err(|e| e.to_string());
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(())
    }

    fn delete(&self, _: usize) -> Result<(), CheckpointerError> {
        Ok(())
    }

    fn restore(&self, _: usize, _: &B::Device) -> Result<R, CheckpointerError> {
        Err(CheckpointerError::Unknown(
            "records are only captured".into(),
        ))
    }
}
