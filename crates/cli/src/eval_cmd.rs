//! `mocoop eval`: evaluates a run directory (MoCoOp, CoOp or zero-shot CLIP) on the test split of
//! its dataset (base and new classes for a base-to-new run) or of another dataset.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;

use mocoop_model::weights::LoadOptions;
use mocoop_train::config::Method;
use mocoop_train::run::{read_config, write_json};
use mocoop_train::{EvalSplit, EvalTarget, TrainedRun, evaluate_run};

use crate::device::{DeviceSpec, OnBackend};
use crate::model_args::CheckpointArgs;

/// Evaluates a run on a test split.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run directory (made by `mocoop train`).
    #[arg(long, value_name = "RUN")]
    run: PathBuf,
    /// base, new or all classes (default: base and new for a base-to-new run on its own dataset,
    /// all otherwise).
    #[arg(long, ignore_case = true)]
    split: Option<EvalSplit>,
    /// Evaluate on another dataset (cross-dataset or domain-shift targets); needs --root.
    #[arg(long, requires = "root")]
    dataset: Option<String>,
    /// Data root of --dataset.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Only accept a run of this method.
    #[arg(long, ignore_case = true)]
    method: Option<Method>,
    /// CLIP checkpoint (default: the one the run was trained with).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// What the checkpoint may not record (default: as recorded in the run).
    #[command(flatten)]
    load: LoadOptions,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Image decoding threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

impl EvalArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }
}

impl OnBackend for EvalArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let config = read_config(&self.run, self.method)?;
        let checkpoint = CheckpointArgs {
            load: self.load.clone().or(&config.load),
            ..CheckpointArgs::of_run(&config, self.weights.clone())
        };
        let loaded = checkpoint.load::<B::InnerBackend>(&self.device, &device)?;
        let run = TrainedRun::load(
            &self.run,
            loaded.clip,
            &loaded.tokenizer,
            self.method,
            &device,
        )?;
        let target = EvalTarget {
            dataset: self.dataset.clone().zip(self.root.clone()),
            split: self.split,
            batch_size: self.batch_size,
            workers: self.workers,
        };
        let results = evaluate_run(&run, &loaded.tokenizer, &target, &device)
            .with_context(|| format!("evaluating {}", self.run.display()))?;
        let dataset = self.dataset.as_deref().unwrap_or(&config.data.dataset);
        let splits: Vec<&str> = results.splits.iter().map(|s| s.split.as_str()).collect();
        let file = self
            .run
            .join(format!("eval-{dataset}-{}.json", splits.join("-")));
        write_json(&file, &results)?;
        println!("{}", serde_json::to_string_pretty(&results)?);
        Ok(())
    }
}
