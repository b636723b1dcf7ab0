//! The run directory:
//!
//! ```text
//! RUN/config.json              every setting (TrainConfig)
//! RUN/groups.toml              the template groups `train --groups auto` suggested (config.json
//!                              names it as the run's groups file)
//! RUN/checkpoint.safetensors   the final trainable tensors (absent for zero-shot runs)
//! RUN/checkpoints/epoch-NNN.safetensors   the last epochs' checkpoints
//! RUN/metrics.jsonl            one line of averages per epoch
//! RUN/train/, RUN/valid/       burn-train's per-iteration metric logs
//! RUN/results.json             test accuracies after training
//! RUN/eval-<dataset>-<split>.json   results of later `mocoop eval` calls
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{Method, TrainConfig};

/// The configuration file of a run.
pub const CONFIG_FILE: &str = "config.json";
/// The final checkpoint of a run.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Test results written after training.
pub const RESULTS_FILE: &str = "results.json";

/// The final checkpoint path of a run.
pub fn checkpoint_path(run: &Path) -> PathBuf {
    run.join(CHECKPOINT_FILE)
}

/// Reads a run's configuration; with `expected`, a run of another method is an error.
pub fn read_config(run: &Path, expected: Option<Method>) -> Result<TrainConfig, TrainError> {
    let path = run.join(CONFIG_FILE);
    if !run.is_dir() {
        return Err(TrainError::Run(format!(
            "run directory {} does not exist",
            run.display()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TrainError::Run(format!(
                "{} is not a mocoop run directory (no {CONFIG_FILE})",
                run.display()
            ))
        } else {
            TrainError::io(&path, e)
        }
    })?;
    let config: TrainConfig = serde_json::from_str(&text).map_err(|e| {
        TrainError::Run(format!(
            "{}: not a mocoop run configuration ({e})",
            path.display()
        ))
    })?;
    if let Some(expected) = expected
        && config.method != expected
    {
        return Err(TrainError::Run(format!(
            "{} is a {} run, not a {expected} run",
            run.display(),
            config.method
        )));
    }
    Ok(config)
}

/// Prepares `run` for a new run of `config`: creates it, or reuses an empty directory. An
/// existing run is kept unless `overwrite` (and a run of another method is never overwritten
/// silently: the message says what it holds).
pub fn create(run: &Path, config: &TrainConfig, overwrite: bool) -> Result<(), TrainError> {
    if check_target(run, config.method, overwrite)? {
        clear_outputs(run);
    }
    std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
    write_json(&run.join(CONFIG_FILE), config)
}

/// Whether a new `method` run may go into `run`, as [`create`] decides it, without changing
/// anything there: for callers that write into the run directory before training starts (the
/// groups of `--groups auto`). `Ok(true)` when an existing run is to be replaced.
pub fn check_target(run: &Path, method: Method, overwrite: bool) -> Result<bool, TrainError> {
    if run.join(CONFIG_FILE).exists() {
        match read_config(run, None) {
            Ok(old) if old.method != method => Err(TrainError::Run(format!(
                "{} already holds a {} run; this is a {method} run: choose another --out",
                run.display(),
                old.method,
            ))),
            _ if !overwrite => Err(TrainError::Run(format!(
                "{} already holds a run (pass --overwrite to replace it)",
                run.display()
            ))),
            _ => Ok(true),
        }
    } else if run.is_file() {
        Err(TrainError::Run(format!(
            "--out {} is a file, not a directory",
            run.display()
        )))
    } else {
        Ok(false)
    }
}

/// Removes what a run writes while it trains (checkpoints, logs, results), keeping `config.json`.
pub fn clear_outputs(run: &Path) {
    for name in [CHECKPOINT_FILE, RESULTS_FILE, crate::journal::METRICS_FILE] {
        let _ = std::fs::remove_file(run.join(name));
    }
    for dir in [crate::resume::CHECKPOINT_DIR, "train", "valid"] {
        let _ = std::fs::remove_dir_all(run.join(dir));
    }
}

/// Writes a value as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("serialisable") + "\n";
    mocoop_model::atomic::write_atomic(path, text.as_bytes()).map_err(|e| TrainError::io(path, e))
}

/// Accuracy on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitResult {
    /// Dataset name.
    pub dataset: String,
    /// `base`, `new` or `all`.
    pub split: String,
    /// Classes of the classifier.
    pub classes: usize,
    /// Images evaluated.
    pub images: usize,
    /// Correctly classified images.
    pub correct: usize,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
}

/// Test results of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// The method.
    pub method: Method,
    /// Each evaluated split.
    pub splits: Vec<SplitResult>,
    /// Harmonic mean of base and new accuracy, when both were evaluated.
    pub hm: Option<f64>,
}

impl RunResults {
    /// Collects split results, adding the harmonic mean when base and new are both present.
    pub fn new(method: Method, splits: Vec<SplitResult>) -> Self {
        let find = |s: &str| splits.iter().find(|r| r.split == s).map(|r| r.accuracy);
        let hm = match (find("base"), find("new")) {
            (Some(b), Some(n)) => Some(harmonic_mean(b, n)),
            _ => None,
        };
        Self { method, splits, hm }
    }
}

/// `2 b n / (b + n)` (0 when both are 0).
pub fn harmonic_mean(b: f64, n: f64) -> f64 {
    if b + n == 0.0 {
        0.0
    } else {
        2.0 * b * n / (b + n)
    }
}
