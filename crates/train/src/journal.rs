//! The run's record of its steps: the running sums of the current epoch, one averaged record per
//! finished epoch (a line of `metrics.jsonl`) and the step whose loss was not finite. Plain data,
//! kept by the training loop ([`crate::run_loop`]) and saved in checkpoints so that a resumed run
//! reports the same averages.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::step::StepOutput;

/// The per-epoch statistics file of a run.
pub const METRICS_FILE: &str = "metrics.jsonl";

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

impl EpochSums {
    /// Adds the values of one training step, or of one device's share of it.
    pub fn add(&mut self, output: &StepOutput) {
        let n = output.batch as f64;
        for (key, value) in &output.values {
            let entry = self.values.entry(key.to_string()).or_insert((0.0, 0.0));
            entry.0 += value * n;
            entry.1 += n;
        }
        if !output.loads.is_empty() {
            if self.loads.len() != output.loads.len() {
                self.loads = vec![0.0; output.loads.len()];
            }
            for (sum, load) in self.loads.iter_mut().zip(&output.loads) {
                *sum += load;
            }
            self.load_steps += 1;
        }
    }

    /// The record of the epoch these sums cover (no checkpoint yet).
    pub fn record(&self, epoch: usize, lr: f64) -> EpochRecord {
        let means = self
            .values
            .iter()
            .map(|(k, (sum, n))| (k.clone(), if *n > 0.0 { sum / n } else { f64::NAN }))
            .collect();
        let expert_load = if self.load_steps > 0 {
            let steps = self.load_steps as f64;
            self.loads.iter().map(|s| s / steps).collect()
        } else {
            Vec::new()
        };
        EpochRecord {
            epoch,
            lr,
            means,
            expert_load,
            checkpoint: None,
        }
    }
}

/// Where a run stands: steps taken, the unfinished epoch's sums and the finished epochs.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// Steps per epoch.
    pub iters_per_epoch: usize,
    /// Optimiser steps taken.
    pub step: usize,
    /// Sums of the unfinished epoch.
    pub sums: EpochSums,
    /// Records of the finished epochs.
    pub epochs: Vec<EpochRecord>,
}

impl Journal {
    /// The journal of a run of `iters_per_epoch` steps per epoch, at its start.
    pub fn new(iters_per_epoch: usize) -> Self {
        Self {
            iters_per_epoch: iters_per_epoch.max(1),
            ..Self::default()
        }
    }

    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.step / self.iters_per_epoch
    }

    /// The 1-based epoch of the next step.
    pub fn epoch_of_next_step(&self) -> usize {
        self.epochs_done() + 1
    }

    /// Whether the last step ended an epoch.
    pub fn at_epoch_end(&self) -> bool {
        self.step > 0 && self.step.is_multiple_of(self.iters_per_epoch)
    }

    /// The [`NonFinite`] record of the next step, whose values are `output`'s.
    pub fn non_finite(&self, output: &StepOutput) -> NonFinite {
        NonFinite {
            step: self.step + 1,
            epoch: self.epoch_of_next_step(),
            values: output
                .values
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }

    /// Counts one applied step whose device shares reported `outputs`.
    pub fn count_step(&mut self, outputs: &[StepOutput]) {
        for output in outputs {
            self.sums.add(output);
        }
        self.step += 1;
    }

    /// Closes the epoch that the last step ended, at learning rate `lr`: its record, the sums
    /// cleared.
    pub fn close_epoch(&mut self, lr: f64) -> EpochRecord {
        let sums = std::mem::take(&mut self.sums);
        sums.record(self.epochs_done(), lr)
    }
}

/// Appends `record` as one line to the run's `metrics.jsonl`.
pub fn append_record(run: &Path, record: &EpochRecord) -> Result<(), TrainError> {
    let line = serde_json::to_string(record).expect("serialisable");
    let log = run.join(METRICS_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| writeln!(f, "{line}"))
        .map_err(|e| TrainError::io(&log, e))
}

/// The records of epochs `1..=epochs` in `metrics.jsonl`; the file is rewritten without later (or
/// unreadable, e.g. half-written) lines, so that a resumed run appends to a clean log.
pub fn kept_epochs(run: &Path, epochs: usize) -> Result<Vec<EpochRecord>, TrainError> {
    let path = run.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let mut by_epoch = BTreeMap::new();
    for line in text.lines() {
        if let Ok(record) = serde_json::from_str::<EpochRecord>(line)
            && record.epoch <= epochs
        {
            by_epoch.insert(record.epoch, (line.to_string(), record));
        }
    }
    let kept: String = by_epoch
        .values()
        .map(|(line, _)| format!("{line}\n"))
        .collect();
    if kept != text {
        mocoop_model::atomic::write_atomic(&path, kept.as_bytes())
            .map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(by_epoch.into_values().map(|(_, r)| r).collect())
}
