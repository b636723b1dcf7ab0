//! State shared by every clone of the training model during one run: the step counter, per-epoch
//! statistics (written to `metrics.jsonl`), the epoch checkpoints, the stop on a non-finite loss,
//! and the clean stop (with a checkpoint) when the user interrupts the run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::train::Interrupter;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::loss_scale::LossScale;
use crate::model::MocoopModel;
use crate::resume::{self, ResumeState};
use crate::step::MocoopOutput;

/// The per-epoch statistics file of a run.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Where and how a run saves its checkpoints and logs.
#[derive(Debug, Clone)]
pub struct RunSink {
    /// The run directory.
    pub dir: PathBuf,
    /// Whether image LayerNorms are saved.
    pub ln_tuning: bool,
    /// Metadata stored in every checkpoint.
    pub metadata: HashMap<String, String>,
    /// Epoch checkpoints kept (older ones are deleted).
    pub keep: usize,
}

/// A non-finite loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonFinite {
    /// The 1-based training step.
    pub step: usize,
    /// The 1-based epoch.
    pub epoch: usize,
    /// The loss terms at that step.
    pub values: BTreeMap<String, f64>,
}

/// Averages of one epoch (one line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The 1-based epoch.
    pub epoch: usize,
    /// The learning rate of the epoch.
    pub lr: f64,
    /// Image-weighted means of the step values (loss terms, accuracy, router entropy).
    pub means: BTreeMap<String, f64>,
    /// Fraction of the top-K slots that went to each expert.
    pub expert_load: Vec<f64>,
    /// The checkpoint written at the end of the epoch.
    pub checkpoint: Option<String>,
}

/// Running sums of the steps of an unfinished epoch (saved with a mid-epoch checkpoint, so that a
/// resumed run reports the same epoch averages).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// Image-weighted sum and total weight of each step value.
    pub values: BTreeMap<String, (f64, f64)>,
    /// Per-expert sum of the step loads.
    pub loads: Vec<f64>,
    /// Steps that reported loads.
    pub load_steps: usize,
}

/// Where a run stopped when the user interrupted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupted {
    /// Steps taken.
    pub step: usize,
    /// The checkpoint written after the last step (none when the run saves nothing).
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct State {
    step: usize,
    iters_per_epoch: usize,
    lr: f64,
    non_finite: Option<NonFinite>,
    sums: EpochSums,
    epochs: Vec<EpochRecord>,
    sink: Option<RunSink>,
    saved: Vec<PathBuf>,
    error: Option<String>,
    interrupted: Option<Interrupted>,
    loss_scale: Option<LossScale>,
}

impl State {
    /// Whether a non-finite loss or an error has stopped the run.
    fn failed(&self) -> bool {
        self.error.is_some() || self.non_finite.is_some()
    }
}

/// Cheaply cloned handle to the run state (all clones share it).
#[derive(Clone, Default)]
pub struct Monitor {
    state: Arc<Mutex<State>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
    stop_request: Arc<Mutex<Option<Arc<AtomicBool>>>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor for a run of `iters_per_epoch` steps per epoch, stopping `interrupter` on a
    /// non-finite loss and saving into `sink` (if any) after every epoch.
    pub fn new(
        iters_per_epoch: usize,
        interrupter: Option<Interrupter>,
        sink: Option<RunSink>,
    ) -> Self {
        let monitor = Self::default();
        {
            let mut state = monitor.lock();
            state.iters_per_epoch = iters_per_epoch.max(1);
            state.sink = sink;
        }
        *monitor.interrupter.lock().expect("monitor lock") = interrupter;
        monitor
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self, reason: &str) {
        if let Some(i) = self
            .interrupter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            i.stop(Some(reason));
        }
    }

    /// Records the values of a training step, or of one device's share of it (every share is
    /// recorded, from its worker thread, before the step is applied). Returns `false` (and stops
    /// training) when the loss is not finite; the step is then not applied.
    pub fn record_train(&self, output: &MocoopOutput) -> bool {
        let mut state = self.lock();
        if state.failed() {
            return false;
        }
        let loss = output.value("loss").unwrap_or(f64::NAN);
        if !loss.is_finite() {
            let step = state.step + 1;
            let epoch = (step - 1) / state.iters_per_epoch.max(1) + 1;
            let values = output
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            state.non_finite = Some(NonFinite {
                step,
                epoch,
                values,
            });
            drop(state);
            self.stop(&format!("non-finite loss at step {step}"));
            return false;
        }
        let n = output.batch as f64;
        let sums = &mut state.sums;
        for (key, value) in &output.values {
            let entry = sums.values.entry(key.to_string()).or_insert((0.0, 0.0));
            entry.0 += value * n;
            entry.1 += n;
        }
        if !output.loads.is_empty() {
            if sums.loads.len() != output.loads.len() {
                sums.loads = vec![0.0; output.loads.len()];
            }
            for (sum, load) in sums.loads.iter_mut().zip(&output.loads) {
                *sum += load;
            }
            sums.load_steps += 1;
        }
        true
    }

    /// Stops the run cleanly (after the current step, with a checkpoint) once `flag` is set, e.g.
    /// by a SIGINT handler.
    pub fn stop_when(&self, flag: Arc<AtomicBool>) {
        *self.stop_request.lock().unwrap_or_else(|p| p.into_inner()) = Some(flag);
    }

    fn stop_requested(&self) -> bool {
        self.stop_request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Continues counting from a checkpoint: `state`'s steps and unfinished-epoch sums, the
    /// records of the finished epochs and the checkpoints already on disk (oldest first, for
    /// rotation).
    pub fn resume_from(&self, state: &ResumeState, epochs: Vec<EpochRecord>, saved: Vec<PathBuf>) {
        let mut s = self.lock();
        s.step = state.step;
        s.sums = state.partial.clone();
        s.epochs = epochs;
        s.saved = saved;
        if state.loss_scale.is_some() {
            s.loss_scale = state.loss_scale;
        }
    }

    /// Turns on dynamic loss scaling (f16 training), starting from `scale`.
    pub fn scale_loss(&self, scale: LossScale) {
        self.lock().loss_scale = Some(scale);
    }

    /// The factor the loss is multiplied by before the backward pass, when scaling is on.
    pub fn loss_scale(&self) -> Option<LossScale> {
        self.lock().loss_scale
    }

    /// Tells the loss scaler whether this step's gradients were finite.
    pub fn update_loss_scale(&self, finite: bool) {
        if let Some(s) = &mut self.lock().loss_scale {
            s.update(finite);
        }
    }

    /// Whether a non-finite loss or an error has stopped the run (its last step is not applied).
    pub fn failed(&self) -> bool {
        self.lock().failed()
    }

    /// Called once after each optimiser step (at learning rate `lr`), which it counts: at the end
    /// of an epoch, or when a stop was requested, saves a resumable checkpoint of `model` with the
    /// optimiser state that `optimizer` serialises; at the end of an epoch also appends its
    /// averages to `metrics.jsonl`.
    pub fn after_update<B: Backend>(
        &self,
        model: &MocoopModel<B>,
        lr: f64,
        optimizer: impl FnOnce() -> Result<Vec<u8>, String>,
    ) {
        let interrupt = self.stop_requested();
        let mut state = self.lock();
        if state.failed() {
            return;
        }
        state.step += 1;
        state.lr = lr;
        let iters = state.iters_per_epoch.max(1);
        let epoch_end = state.step.is_multiple_of(iters);
        if !(epoch_end || interrupt) {
            return;
        }
        let mut record = epoch_end.then(|| {
            let sums = std::mem::take(&mut state.sums);
            EpochRecord {
                epoch: state.step / iters,
                lr: state.lr,
                means: sums
                    .values
                    .iter()
                    .map(|(k, (sum, n))| (k.clone(), if *n > 0.0 { sum / n } else { f64::NAN }))
                    .collect(),
                expert_load: if sums.load_steps > 0 {
                    let steps = sums.load_steps as f64;
                    sums.loads.iter().map(|s| s / steps).collect()
                } else {
                    Vec::new()
                },
                checkpoint: None,
            }
        });
        let mut saved_to = None;
        if let Some(sink) = state.sink.clone() {
            let step = state.step;
            let name = match &record {
                Some(r) => format!("epoch-{:03}.safetensors", r.epoch),
                None => format!("step-{step:07}.safetensors"),
            };
            let path = sink.dir.join(resume::CHECKPOINT_DIR).join(&name);
            let written = save(&sink, &path, model, &state, optimizer);
            if let Err(e) = written {
                state.error = Some(format!("saving checkpoint {}: {e}", path.display()));
                drop(state);
                self.stop("cannot save a checkpoint");
                return;
            }
            state.saved.push(path.clone());
            while state.saved.len() > sink.keep.max(1) {
                let old = state.saved.remove(0);
                let _ = std::fs::remove_file(old);
            }
            saved_to = Some(path);
            if let Some(record) = &mut record {
                record.checkpoint = Some(format!("{}/{name}", resume::CHECKPOINT_DIR));
                let line = serde_json::to_string(record).expect("serialisable");
                let log = sink.dir.join(METRICS_FILE);
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(e) = appended {
                    state.error = Some(format!("writing {}: {e}", log.display()));
                }
            }
        }
        if let Some(record) = record {
            state.epochs.push(record);
        }
        if interrupt {
            state.interrupted = Some(Interrupted {
                step: state.step,
                checkpoint: saved_to,
            });
            drop(state);
            self.stop("interrupted");
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.lock().step
    }

    /// The non-finite loss that stopped training, if any.
    pub fn non_finite(&self) -> Option<NonFinite> {
        self.lock().non_finite.clone()
    }

    /// An error that stopped training (checkpoint or log writing, data), if any.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Records an error that must stop training.
    pub fn fail(&self, message: String) {
        self.lock().error.get_or_insert(message);
        self.stop("error");
    }

    /// The completed epochs' records.
    pub fn epochs(&self) -> Vec<EpochRecord> {
        self.lock().epochs.clone()
    }

    /// Where the run stopped, if the user interrupted it.
    pub fn interrupted(&self) -> Option<Interrupted> {
        self.lock().interrupted.clone()
    }

    /// The last checkpoint written.
    pub fn last_checkpoint(&self) -> Option<PathBuf> {
        self.lock().saved.last().cloned()
    }
}

/// Writes one resumable checkpoint: the trainable tensors, the optimiser state and where the run
/// stands.
fn save<B: Backend>(
    sink: &RunSink,
    path: &Path,
    model: &MocoopModel<B>,
    state: &State,
    optimizer: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let tensors = checkpoint::trainable_tensors(&model.clip, &model.mixture, sink.ln_tuning);
    let resume = ResumeState {
        step: state.step,
        iters_per_epoch: state.iters_per_epoch,
        partial: state.sums.clone(),
        param_ids: resume::param_ids(model, sink.ln_tuning)
            .into_iter()
            .map(|(name, id)| (name, id.val()))
            .collect(),
        loss_scale: state.loss_scale,
    };
    let mut metadata = sink.metadata.clone();
    metadata.insert(
        "epoch".into(),
        (state.step / state.iters_per_epoch.max(1)).to_string(),
    );
    metadata.insert(
        resume::RESUME_KEY.into(),
        serde_json::to_string(&resume).expect("serialisable"),
    );
    let blobs = [(resume::OPTIMIZER_BLOB.to_string(), optimizer()?)];
    checkpoint::write(path, &tensors, &blobs, metadata).map_err(|e| e.to_string())
}
