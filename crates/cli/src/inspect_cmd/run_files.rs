//! What `mocoop inspect` reads from a run directory, through mocoop-train's public API only (its
//! internals change; this module is the one place the command touches them): the configuration,
//! the results, the epoch records and the final checkpoint with its content digest; and, on
//! request, the router's load on the test split.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use mocoop_model::Clip;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_train::config::TrainConfig;
use mocoop_train::{EpochRecord, RunResults, TrainedRun, checkpoint, run};

use crate::report::routing::route;

/// The per-epoch log of a run (`mocoop-train` writes it; its name is not exported).
const METRICS_FILE: &str = "metrics.jsonl";

/// A run directory's files, read and checked.
#[derive(Debug)]
pub struct RunFiles {
    /// `config.json`.
    pub config: TrainConfig,
    /// `results.json`, if the run was evaluated.
    pub results: Option<RunResults>,
    /// The lines of `metrics.jsonl` that parse, in epoch order.
    pub epochs: Vec<EpochRecord>,
    /// The final checkpoint's f32 tensors by name (none for zero-shot runs).
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// The checkpoint's content digest (SHA-256, hex), checked against its content on reading.
    pub digest: Option<String>,
}

/// Reads `dir`; a folder that is not a run, or a damaged checkpoint, is a one-line error.
pub fn read(dir: &Path) -> Result<RunFiles> {
    if !dir.join(run::CONFIG_FILE).is_file() {
        bail!(
            "{} is not a mocoop run directory: it has no {} (`mocoop train --out DIR` makes one)",
            dir.display(),
            run::CONFIG_FILE
        );
    }
    let config = run::read_config(dir, None)?;
    let results = match std::fs::read_to_string(dir.join(run::RESULTS_FILE)) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a results file", run::RESULTS_FILE))?,
        ),
        Err(_) => None,
    };
    let epochs = std::fs::read_to_string(dir.join(METRICS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let (tensors, digest) = if config.method == mocoop_train::Method::ZeroShot {
        (BTreeMap::new(), None)
    } else {
        let path = run::checkpoint_path(dir);
        if !path.is_file() {
            bail!(
                "{} has no final checkpoint ({}): the run did not finish; `mocoop train --resume {}` \
                 continues it",
                dir.display(),
                path.display(),
                dir.display()
            );
        }
        let ckpt = checkpoint::read(&path).context("the run's final checkpoint is unusable")?;
        let tensors = ckpt
            .tensors
            .into_iter()
            .map(|(name, data)| {
                let shape = data.shape.to_vec();
                let values = data
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
                Ok((name, (shape, values)))
            })
            .collect::<Result<_>>()?;
        (tensors, ckpt.metadata.get(checkpoint::DIGEST_KEY).cloned())
    };
    Ok(RunFiles {
        config,
        results,
        epochs,
        tensors,
        digest,
    })
}

/// The share of the router's top-K choices each expert gets over the test split of the run's
/// dataset (all its classes), and the number of images: the run loaded onto `clip`, every test
/// image encoded.
pub fn test_load<B: Backend>(
    dir: &Path,
    config: &TrainConfig,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    device: &B::Device,
) -> Result<(Vec<f64>, usize)> {
    let run = TrainedRun::load(dir, clip, tokenizer, None, device)?;
    let data = &config.data;
    let dataset = mocoop_data::load_dataset(&data.dataset, &data.root).with_context(|| {
        format!(
            "the run's test split ({} in {})",
            data.dataset,
            data.root.display()
        )
    })?;
    let mut picks = vec![0usize; config.mixture.num_experts()];
    route(&run, tokenizer, &dataset, device, |_, gates| {
        for (e, _) in gates.iter().enumerate().filter(|(_, g)| **g > 0.0) {
            picks[e] += 1;
        }
    })?;
    let total: usize = picks.iter().sum();
    let load = picks
        .iter()
        .map(|&p| p as f64 / total.max(1) as f64)
        .collect();
    Ok((load, dataset.test.len()))
}
