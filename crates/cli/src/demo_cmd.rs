//! `mocoop demo`: the whole method on the generated shape world, with no download.
//!
//! Writes the world's benchmark, loads the small CLIP shipped in the binary, runs zero-shot CLIP,
//! CoOp and MoCoOp (with `--methods all` also CoCoOp, KgCoOp and MaPLe) base-to-new through the same
//! training and evaluation code as `mocoop train`, prints the table and writes a report folder
//! (`crate::report::demo`: results JSON, Markdown summary, `report.html`, figures of the training
//! curves, of the router's expert choices per image style and per class, and of each expert's
//! most confident test images).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Parser;
use mocoop_data::load_dataset;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, Precision};
use mocoop_train::config::Setting;
use mocoop_train::{Method, Recipe, TrainedRun, train};
use mocoop_world::{BenchmarkConfig, Style, style_from_path, write_benchmark};

use crate::device::{DeviceSpec, OnBackend};
use crate::model_args::CheckpointArgs;
use crate::report;
use crate::report::demo::MethodRun;
use crate::report::routing::Routing;
use crate::train_cmd::{RunData, TrainFlags};

/// The small CLIP pretrained on the shape world (see assets/README.md for how it was made).
const SHIPPED_CLIP: &[u8] = include_bytes!("../../../assets/shapeworld-clip.safetensors");
/// The benchmark's name in the dataset registry and the template-group table.
const DATASET: &str = "shapeworld";

/// The demo's methods in table order: the name in the table, the `--method` and flags of its
/// own, and whether the default demo runs it (the others only with `--methods all`: CoCoOp's
/// recipe steps one image at a time, which alone takes longer than the rest of the demo).
/// MaPLe's prompts reach into all four blocks of the shipped CLIP's towers (its recipe's depth 9
/// is for ViT-B/16's twelve).
const METHODS: &[(&str, &[&str], bool)] = &[
    ("zero-shot CLIP", &["zero-shot"], true),
    ("CoOp", &["coop"], true),
    ("CoCoOp", &["cocoop"], false),
    ("KgCoOp", &["kgcoop"], false),
    ("MaPLe", &["maple", "--prompt-depth", "4"], false),
    ("MoCoOp", &["mocoop"], true),
];

/// Which of [`METHODS`] a demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoMethods {
    /// Zero-shot CLIP, CoOp and MoCoOp.
    Default,
    /// Every method of the table.
    All,
}

/// Runs zero-shot CLIP, CoOp and MoCoOp (or every method) base-to-new on the generated shape
/// world.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the generated data, the runs and the report.
    #[arg(long, default_value = "mocoop-demo")]
    out: PathBuf,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Seed of the benchmark images, the few-shot draw and training.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Training images per base class.
    #[arg(long, default_value_t = 16)]
    shots: usize,
    /// Training epochs of every trained method (MoCoOp's base-to-new recipe's; fewer warm up for
    /// their share of each recipe's warm-up).
    #[arg(long, default_value_t = Recipe::for_run(Method::Mocoop, DATASET).epochs)]
    epochs: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 30)]
    test_images: usize,
    /// Which methods: default (zero-shot CLIP, CoOp, MoCoOp) or all (also CoCoOp, KgCoOp and MaPLe).
    #[arg(long, value_enum, default_value_t = DemoMethods::Default)]
    methods: DemoMethods,
}

impl DemoArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }

    /// The training flags of a method: `method` is its `--method` and its own flags.
    fn flags(&self, method: &[&str]) -> Result<TrainFlags> {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            flags: TrainFlags,
        }
        let epochs = self.epochs.to_string();
        let args = ["demo", "--method"].iter().chain(method);
        Ok(Flags::try_parse_from(args.chain(&["--epochs", &epochs]))
            .context("demo training flags")?
            .flags)
    }
}

impl OnBackend for DemoArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        anyhow::ensure!(self.epochs >= 2, "--epochs must be at least 2");
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let data_root = self.out.join("data");
        let methods: Vec<(&'static str, &[&str])> = METHODS
            .iter()
            .filter(|(_, _, default)| *default || self.methods == DemoMethods::All)
            .map(|&(name, method, _)| (name, method))
            .collect();
        let stages = methods.len() + 2;
        eprintln!(
            "[1/{stages}] generating the shape-world benchmark in {}",
            data_root.display()
        );
        let val = self.shots.clamp(1, 4);
        let bench_config =
            BenchmarkConfig::new(self.seed).with_counts(self.shots, val, self.test_images);
        let bench = write_benchmark(&data_root, &bench_config)?;
        let weights = self.out.join("shapeworld-clip.safetensors");
        std::fs::write(&weights, SHIPPED_CLIP)
            .with_context(|| format!("writing {}", weights.display()))?;
        let checkpoint = CheckpointArgs {
            weights,
            load: LoadOptions::default(),
            precision: Precision::F32,
        };
        let run_data = RunData {
            dataset: DATASET.into(),
            root: data_root.clone(),
            setting: Setting::Base2new,
            shots: self.shots,
            seed: self.seed,
        };

        let mut runs = Vec::new();
        for (step, (name, method)) in methods.into_iter().enumerate() {
            eprintln!("[{}/{stages}] {name}", step + 2);
            let flags = self.flags(method)?;
            let config = flags.config(&checkpoint, &run_data)?;
            let loaded = checkpoint.load::<B>(&self.device, &device)?;
            let run_dir = self.out.join("runs").join(method[0]);
            let report = train(
                config,
                loaded.clip,
                &loaded.tokenizer,
                &run_dir,
                &flags.options(true),
                std::slice::from_ref(&device),
            )
            .with_context(|| format!("{name} run in {}", run_dir.display()))?;
            runs.push(MethodRun { name, report });
        }

        let report_dir = self.out.join("report");
        std::fs::create_dir_all(&report_dir)?;
        let loaded = checkpoint.load::<B::InnerBackend>(&self.device, &device)?;
        let routing = routing_counts::<B::InnerBackend>(
            &self.out.join("runs").join("mocoop"),
            loaded.clip,
            &loaded.tokenizer,
            &data_root,
            &device,
        )?;
        report::demo::write(
            &report_dir,
            &runs,
            &routing,
            bench.classnames.len(),
            bench.num_base,
        )?;
        print_table(&runs);
        eprintln!("report: {}", report_dir.display());
        Ok(())
    }
}

/// Runs the trained MoCoOp router over every test image (base and new) and counts its choices.
fn routing_counts<B: Backend>(
    run_dir: &Path,
    clip: Clip<B>,
    tokenizer: &ClipTokenizer,
    data_root: &Path,
    device: &B::Device,
) -> Result<Routing> {
    let run = TrainedRun::load(run_dir, clip, tokenizer, Some(Method::Mocoop), device)?;
    let dataset = load_dataset(DATASET, data_root)?;
    let styles: Vec<&str> = Style::ALL.iter().map(|s| s.name()).collect();
    let style = |item: &mocoop_data::Item| {
        Some(style_from_path(&item.path).map_or("unknown", |s| s.name()))
    };
    Routing::of_run(&run, tokenizer, &dataset, &styles, style, device)
}

fn print_table(runs: &[MethodRun]) {
    let table = report::demo::results_table(runs);
    for row in std::iter::once(&table.header).chain(&table.rows) {
        println!("{:<16} {:>7} {:>7} {:>7}", row[0], row[1], row[2], row[3]);
    }
}
