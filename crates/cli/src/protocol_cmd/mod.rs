//! `mocoop protocol`: runs a whole evaluation grid of the CoOp family (methods × datasets × shots
//! × seeds), resuming where it stopped, and writes the results tables as Markdown and JSON (one
//! per method and, for several methods, one table of them all) and the report of every method run
//! in the same folder (`crate::report::protocol`).
//!
//! Runs go to `OUT/<method>/<dataset>/shots<k>-seed<s>/` (ordinary run directories); a run whose
//! `results.json` exists with the same configuration is reused, an unfinished one with the same
//! configuration is resumed from its last checkpoint, any other is refused. Each cell is one
//! directory, so a seed is never counted twice; a list naming a method, dataset, shot count or
//! seed twice is refused.
//!
//! Cells are claimed with lock files (`claim`), so that several processes can share one grid:
//! plain `mocoop protocol` runs, `--cell N` (one cell, what each task of the Slurm job array
//! `--slurm` writes runs) and `--collect` (the tables once every cell is finished, or what is
//! missing).

mod cell;
mod claim;
mod collect;
mod grid;
mod schedule;
mod slurm;
mod tables;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use mocoop_train::config::Method;

use crate::device::{DeviceList, OnDevices, dispatch_all};
use crate::model_args::CheckpointArgs;
use crate::train_cmd::TrainFlags;

/// Which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolName {
    /// Train on base classes (16 shots), test on base and new; Base / New / HM.
    Base2new,
    /// All classes, accuracy per number of shots (1, 2, 4, 8, 16).
    Fewshot,
    /// Train on ImageNet (16 shots), test on ImageNet-V2, -Sketch, -A and -R.
    Domain,
    /// Train on ImageNet (16 shots), test on the other 10 datasets.
    CrossDataset,
}

impl ProtocolName {
    /// The name in file names and titles.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base2new => "base2new",
            Self::Fewshot => "fewshot",
            Self::Domain => "domain",
            Self::CrossDataset => "cross-dataset",
        }
    }
}

/// Runs a protocol grid and writes its results table.
#[derive(Debug, clap::Args)]
pub struct ProtocolArgs {
    /// base2new, fewshot, domain or cross-dataset.
    #[arg(value_enum)]
    protocol: ProtocolName,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N; or several of one kind,
    /// comma-separated (cuda:0,cuda:1), to split every training batch across them (data
    /// parallel; evaluation runs on the first).
    #[arg(long, default_value = "cpu", value_name = "DEVICE[,DEVICE…]")]
    device: DeviceList,
    /// Data root holding every dataset's folder.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Methods, comma-separated (coop,cocoop,kgcoop,prograd,mocoop), each with its own recipe:
    /// the grid runs over them too and one table lists them all. Flags that only some methods
    /// read are refused (they would apply to every method). Default: --method.
    #[arg(
        long,
        value_delimiter = ',',
        ignore_case = true,
        conflicts_with = "method"
    )]
    methods: Vec<Method>,
    /// Training datasets, comma-separated (default: the 11 of the benchmark; ImageNet for the
    /// transfer protocols).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Shots, comma-separated (default: 1,2,4,8,16 for fewshot, 16 otherwise).
    #[arg(long, value_delimiter = ',')]
    shots: Vec<usize>,
    /// Evaluation targets of the transfer protocols, comma-separated (default: the four ImageNet
    /// variants for domain, the other 10 datasets for cross-dataset).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Folder of the runs and the results table (several processes may share it: cells are
    /// claimed with lock files in OUT/claims).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Run only cell N of the grid (0-based, in the order method, dataset, shots, seed), as each
    /// task of the --slurm job array does; the tables are written when it was the last one.
    #[arg(long, value_name = "N", conflicts_with_all = ["collect", "slurm"])]
    cell: Option<usize>,
    /// Train nothing: write the tables if every cell is finished, or list the missing and failed
    /// cells with their logs.
    #[arg(long, conflicts_with = "slurm")]
    collect: bool,
    /// A claim whose heartbeat is older than this many seconds belongs to a process that died:
    /// it is taken over and the cell resumed from its checkpoint (the heartbeat beats 4 times
    /// in this time).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    stale_after: f64,
    #[command(flatten)]
    slurm: slurm::SlurmArgs,
    /// The method and its settings.
    #[command(flatten)]
    pub flags: TrainFlags,
}

impl ProtocolArgs {
    fn grid(&self) -> Result<grid::Grid> {
        let methods = match self.methods.is_empty() {
            true => vec![self.flags.method],
            false => self.methods.clone(),
        };
        grid::Grid::new(
            self.protocol,
            methods,
            &self.datasets,
            &self.shots,
            &self.seeds,
            &self.targets,
        )
    }

    fn stale_after(&self) -> Result<Duration> {
        Duration::try_from_secs_f64(self.stale_after)
            .ok()
            .filter(|d| *d >= Duration::from_millis(200))
            .ok_or_else(|| anyhow::anyhow!("--stale-after must be at least 0.2 seconds"))
    }
}

/// Runs `mocoop protocol`: `--slurm` and `--collect` need no compute device, the rest trains.
pub fn start(args: ProtocolArgs) -> Result<()> {
    if args.slurm.slurm {
        slurm::submit(&args)
    } else if args.collect {
        collect::collect(&args)
    } else {
        dispatch_all(&args.device.clone(), args)
    }
}

impl OnDevices for ProtocolArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(mut self, devices: Vec<B::Device>) -> Result<()> {
        let grid = self.grid()?;
        // The recipe may choose the precision (the official one: f16 on GPUs).
        self.checkpoint = self
            .flags
            .checkpoint_for(&self.checkpoint, self.device.main())?;
        let cells = cell::Cells {
            args: &self,
            grid: &grid,
        };
        let mut worker = schedule::Worker::<B>::new(&cells, devices)?;
        match self.cell {
            Some(n) => worker.run_one(n),
            None => {
                let results = worker.run_all()?;
                tables::write(&cells, &results)
            }
        }
    }
}
