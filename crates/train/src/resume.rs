//! Continuing a killed or interrupted run exactly where its last checkpoint left it.
//!
//! Every epoch checkpoint (and the one written when a run is interrupted) holds, besides the
//! trainable tensors, the optimiser's state (a byte tensor) and a [`ResumeState`] (JSON metadata):
//! the steps taken, the running sums of an unfinished epoch and the parameter id each tensor had.
//! Data order, augmentation and router noise are functions of the seed and the step, so a resumed
//! run repeats exactly what the uninterrupted run would have done.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::checkpoint::{self, Checkpoint};
use crate::journal::EpochSums;
use crate::loss_scale::LossScale;

/// Name of the byte tensor holding the optimiser state.
pub const OPTIMIZER_BLOB: &str = "state.optimizer";
/// Metadata key of the [`ResumeState`] JSON.
pub const RESUME_KEY: &str = "resume";
/// The folder of a run's resumable checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// Where a run stood when a checkpoint was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Steps per epoch (a resumed run must have the same).
    pub iters_per_epoch: usize,
    /// Running sums of the unfinished epoch (empty at the end of an epoch).
    pub partial: EpochSums,
    /// The parameter id of each trainable tensor, by checkpoint name, when it was saved.
    pub param_ids: BTreeMap<String, u64>,
    /// The loss scaler's state (f16 runs).
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

impl ResumeState {
    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.step / self.iters_per_epoch.max(1)
    }

    /// Steps taken in the unfinished epoch (0 at an epoch's end).
    pub fn steps_into_epoch(&self) -> usize {
        self.step % self.iters_per_epoch.max(1)
    }
}

/// A checkpoint a run can continue from.
#[derive(Debug)]
pub struct ResumePoint {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub checkpoint: Checkpoint,
    /// Where the run stood.
    pub state: ResumeState,
}

/// Loads saved optimiser state into `optim`, moving each parameter's state from the id it had when
/// saved (`saved_ids`) to the id the same tensor has now (`current_ids`).
pub fn restore_optimizer<M, B, O, T>(
    optim: O,
    bytes: &[u8],
    saved_ids: &BTreeMap<String, u64>,
    current_ids: &[(String, ParamId)],
    device: &B::Device,
) -> Result<O, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B, Record = HashMap<ParamId, T>>,
    T: Record<B>,
{
    let bad = |m: String| TrainError::Checkpoint(format!("optimiser state: {m}"));
    // The digest has vouched for the bytes, but a crafted file could still declare tensors whose
    // shape does not match their data, which burn turns into a panic: report it as an error.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load::<HashMap<ParamId, T>>(bytes.to_vec(), device)
    }));
    let record = match decoded {
        Ok(loaded) => loaded.map_err(|e| bad(e.to_string()))?,
        Err(_) => return Err(bad("malformed tensors".into())),
    };
    let current: HashMap<&str, ParamId> = current_ids
        .iter()
        .map(|(name, id)| (name.as_str(), *id))
        .collect();
    let mut moved = HashMap::with_capacity(record.len());
    let by_old_id: HashMap<u64, &str> = saved_ids
        .iter()
        .map(|(name, id)| (*id, name.as_str()))
        .collect();
    for (old, state) in record {
        let name = by_old_id
            .get(&old.val())
            .ok_or_else(|| bad(format!("state for an unknown parameter {old}")))?;
        let new = current
            .get(name)
            .ok_or_else(|| bad(format!("state for '{name}', which this run does not train")))?;
        moved.insert(*new, state);
    }
    Ok(optim.load_record(moved))
}

/// What a run directory holds to resume from.
#[derive(Debug, Default)]
pub struct Scan {
    /// The newest intact resumable checkpoint (by steps taken).
    pub latest: Option<ResumePoint>,
    /// Every intact resumable checkpoint, oldest first.
    pub intact: Vec<PathBuf>,
    /// One line per damaged checkpoint passed over.
    pub damaged: Vec<String>,
}

/// Reads every checkpoint in `run`'s checkpoint folder, keeping the newest intact one.
pub fn scan(run: &Path) -> Result<Scan, TrainError> {
    let dir = run.join(CHECKPOINT_DIR);
    let mut files = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(|e| TrainError::io(&dir, e))?.path();
                if path.extension().is_some_and(|e| e == "safetensors") {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TrainError::io(&dir, e)),
    }
    let mut scan = Scan::default();
    let mut intact = Vec::new();
    for path in files {
        let found = checkpoint::read(&path).and_then(|checkpoint| {
            let state = resume_state(&path, &checkpoint)?;
            Ok(ResumePoint {
                path: path.clone(),
                checkpoint,
                state,
            })
        });
        match found {
            Ok(point) => {
                intact.push((point.state.step, path));
                if scan
                    .latest
                    .as_ref()
                    .is_none_or(|b| point.state.step > b.state.step)
                {
                    scan.latest = Some(point);
                }
            }
            Err(e) => scan
                .damaged
                .push(format!("passing over a damaged checkpoint: {e}")),
        }
    }
    intact.sort();
    scan.intact = intact.into_iter().map(|(_, p)| p).collect();
    Ok(scan)
}

/// The [`ResumeState`] and optimiser state a checkpoint must carry to be resumed from.
fn resume_state(path: &Path, checkpoint: &Checkpoint) -> Result<ResumeState, TrainError> {
    let bad = |m: &str| TrainError::Checkpoint(format!("{}: {m}", path.display()));
    let text = checkpoint
        .metadata
        .get(RESUME_KEY)
        .ok_or_else(|| bad("no resume state"))?;
    if !checkpoint.blobs.contains_key(OPTIMIZER_BLOB) {
        return Err(bad("no optimiser state"));
    }
    serde_json::from_str(text).map_err(|e| bad(&format!("unreadable resume state ({e})")))
}
