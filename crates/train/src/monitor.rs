//! State shared by every clone of the training model during one run: the step counter, per-epoch
//! statistics (written to `metrics.jsonl`), the epoch checkpoints, and the stop on a non-finite
//! loss.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::train::Interrupter;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::model::MocoopModel;
use crate::step::MocoopOutput;

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

#[derive(Debug, Default)]
struct State {
    step: usize,
    iters_per_epoch: usize,
    lr: f64,
    non_finite: Option<NonFinite>,
    sums: BTreeMap<String, (f64, f64)>,
    load_sums: Vec<f64>,
    load_steps: usize,
    epochs: Vec<EpochRecord>,
    sink: Option<RunSink>,
    saved: Vec<PathBuf>,
    error: Option<String>,
}

/// Cheaply cloned handle to the run state (all clones share it).
#[derive(Clone, Default)]
pub struct Monitor {
    state: Arc<Mutex<State>>,
    interrupter: Arc<Mutex<Option<Interrupter>>>,
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

    /// Records a training step's values. Returns `false` (and stops training) when the loss is
    /// not finite; the step is then not applied.
    pub fn record_train(&self, output: &MocoopOutput) -> bool {
        let mut state = self.lock();
        if state.non_finite.is_some() || state.error.is_some() {
            return false;
        }
        state.step += 1;
        let loss = output.value("loss").unwrap_or(f64::NAN);
        if !loss.is_finite() {
            let step = state.step;
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
        for (key, value) in &output.values {
            let entry = state.sums.entry(key.to_string()).or_insert((0.0, 0.0));
            entry.0 += value * n;
            entry.1 += n;
        }
        if !output.loads.is_empty() {
            if state.load_sums.len() != output.loads.len() {
                state.load_sums = vec![0.0; output.loads.len()];
            }
            for (sum, load) in state.load_sums.iter_mut().zip(&output.loads) {
                *sum += load;
            }
            state.load_steps += 1;
        }
        true
    }

    /// Called after each optimiser step (at learning rate `lr`): at the end of an epoch, saves a
    /// checkpoint of `model` and appends the epoch's averages to `metrics.jsonl`.
    pub fn after_update<B: Backend>(&self, model: &MocoopModel<B>, lr: f64) {
        let mut state = self.lock();
        state.lr = lr;
        if state.iters_per_epoch == 0
            || state.step == 0
            || !state.step.is_multiple_of(state.iters_per_epoch)
            || state.error.is_some()
        {
            return;
        }
        let epoch = state.step / state.iters_per_epoch;
        let means = state
            .sums
            .iter()
            .map(|(k, (sum, n))| (k.clone(), if *n > 0.0 { sum / n } else { f64::NAN }))
            .collect();
        let expert_load = if state.load_steps > 0 {
            state
                .load_sums
                .iter()
                .map(|s| s / state.load_steps as f64)
                .collect()
        } else {
            Vec::new()
        };
        state.sums.clear();
        state.load_sums.clear();
        state.load_steps = 0;
        let mut record = EpochRecord {
            epoch,
            lr: state.lr,
            means,
            expert_load,
            checkpoint: None,
        };
        if let Some(sink) = state.sink.clone() {
            let name = format!("epoch-{epoch:03}.safetensors");
            let path = sink.dir.join("checkpoints").join(&name);
            let tensors =
                checkpoint::trainable_tensors(&model.clip, &model.mixture, sink.ln_tuning);
            let mut metadata = sink.metadata.clone();
            metadata.insert("epoch".into(), epoch.to_string());
            match checkpoint::write(&path, &tensors, metadata) {
                Ok(()) => {
                    record.checkpoint = Some(format!("checkpoints/{name}"));
                    state.saved.push(path);
                    while state.saved.len() > sink.keep.max(1) {
                        let old = state.saved.remove(0);
                        let _ = std::fs::remove_file(old);
                    }
                }
                Err(e) => {
                    state.error = Some(format!("saving the epoch {epoch} checkpoint: {e}"));
                    drop(state);
                    self.stop("cannot save a checkpoint");
                    return;
                }
            }
            let line = serde_json::to_string(&record).expect("serialisable");
            let log = sink.dir.join("metrics.jsonl");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                state.error = Some(format!("writing {}: {e}", log.display()));
            }
        }
        state.epochs.push(record);
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

    /// The last checkpoint written.
    pub fn last_checkpoint(&self) -> Option<PathBuf> {
        self.lock().saved.last().cloned()
    }
}
