//! `mocoop bench`: training and inference throughput and peak memory of MoCoOp on a random-weight
//! CLIP, through the same code the trainer and `classify` use (issue #6's benchmark).
//!
//! Each case runs in a child process of this binary (the hidden `--case`), so that the peak
//! resident memory read at its end belongs to that case alone. `bench/run.sh` runs the PyTorch
//! reference (`bench/reference/mocoop_step.py`) on the same cases and reports the ratios.

mod cases;
mod device_memory;
mod geometry;
mod measure;
mod report;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;

use crate::device::{DeviceList, DeviceSpec, OnDevices, dispatch_all};
use crate::model_args::check_precision;
use cases::{CaseName, CaseSpec};
use geometry::Geometry;
use measure::Schedule;
use mocoop_model::Precision;
use mocoop_train::{DeviceSplit, Method};
use report::{CaseRecord, Report};

/// Marks the line on which a child process hands its record to the parent.
const RECORD_PREFIX: &str = "MOCOOP_BENCH_RECORD ";

/// Measures MoCoOp training steps (E = 5, C = 50, batch 32, with and without visual LN tuning; an
/// ImageNet-scale step, E = 20, C = 1000), CoCoOp's (batch 1 and 8), KgCoOp's and ProGrad's
/// (C = 50), and inference with cached text features against plain image encoding, on a CLIP
/// with random weights. Prints a table; `--json` writes the records.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backend and device: cpu, wgpu[:N], cuda[:N]. Training cases also take a list of devices
    /// (cuda:0,cuda:1; cpu,cpu for two CPU workers) and share each step as `train` does.
    #[arg(long, default_value = "cpu")]
    device: DeviceList,
    /// With several devices: batch (data parallel) or classes (the prompts shared), as for
    /// `train --split`.
    #[arg(long, value_enum, default_value_t = DeviceSplit::Batch)]
    split: DeviceSplit,
    /// Model size [default: small on the CPU, vit-b-16 on GPUs].
    #[arg(long, value_enum)]
    geometry: Option<Geometry>,
    /// Cases to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    cases: Vec<CaseName>,
    /// Timed steps (or inference batches) per case.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Images per step (not of the CoCoOp cases, whose batch, 1 or 8, is the case's).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Classes of the ImageNet-scale case [default: 1000; 100 below vit-b-16].
    #[arg(long)]
    classes: Option<usize>,
    /// Experts of the ImageNet-scale case (at most 20) [default: 20].
    #[arg(long)]
    experts: Option<usize>,
    /// Also time the parts of a step (image encoder, text side, forward, backward; the mixing of
    /// cached text features at inference).
    #[arg(long)]
    breakdown: bool,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Precision of the encoders' compute (f16 adds dynamic loss scaling in training).
    #[arg(long, default_value = "f32", ignore_case = true)]
    precision: Precision,
    /// Write the records as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Run only this case in this process and print its record (used by the parent process).
    #[arg(long, value_enum, hide = true)]
    case: Option<CaseName>,
}

impl BenchArgs {
    fn geometry(&self) -> Geometry {
        self.geometry.unwrap_or(match self.device.main() {
            DeviceSpec::Cpu => Geometry::Small,
            _ => Geometry::VitB16,
        })
    }

    fn spec(&self, case: CaseName) -> CaseSpec {
        CaseSpec::new(
            case,
            self.geometry(),
            self.batch,
            self.classes,
            self.experts,
        )
    }

    /// Whether `case` runs only on a ViT image tower: it tunes the image LayerNorms, or prompts
    /// the image layers (MaPLe).
    fn needs_vit(&self, case: CaseName) -> bool {
        self.spec(case).ln_tuning || case == CaseName::TrainMaple
    }

    /// The cases to run, in report order.
    fn requested(&self) -> Vec<CaseName> {
        if let Some(case) = self.case {
            vec![case]
        } else if self.cases.is_empty() {
            // Several devices: MoCoOp's training cases, the ones `train --device` shares.
            let several = self.device.specs().len() > 1;
            // A ResNet: the cases that need no ViT.
            let vit = self.geometry().has_image_layer_norms();
            CaseName::ALL
                .into_iter()
                .filter(|case| !several || (case.is_training() && case.method() == Method::Mocoop))
                .filter(|case| vit || !self.needs_vit(*case))
                .collect()
        } else {
            self.cases.clone()
        }
    }

    /// Runs every requested case in its own child process, prints the table, writes the JSON.
    pub fn run(self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 {
            bail!("--steps and --batch must be at least 1");
        }
        if !self.geometry().has_image_layer_norms()
            && let Some(case) = self.requested().into_iter().find(|c| self.needs_vit(*c))
        {
            bail!(
                "{} needs a ViT image tower (LayerNorms to tune, or layers to prompt), and the {} \
                 geometry's is a ResNet",
                case.name(),
                self.geometry().name()
            );
        }
        let workers = self.device.specs().len();
        if workers > 1 {
            if let Some(case) = self.requested().iter().find(|c| !c.is_training()) {
                bail!(
                    "{} is an inference case and runs on one device, not '{}'",
                    case.name(),
                    self.device
                );
            }
            let batches = self.requested().into_iter().map(|c| self.spec(c).batch);
            if let Some(batch) = batches.filter(|&b| workers > b).min()
                && self.split == DeviceSplit::Batch
            {
                bail!("{workers} devices for a batch of {batch}: at most one device per image");
            }
        }
        if let Some(case) = self.case {
            let record = dispatch_all(&self.device.clone(), CaseJob { args: self, case })?;
            println!("{RECORD_PREFIX}{}", serde_json::to_string(&record)?);
            return Ok(());
        }
        let cases = self.requested();
        let mut records = Vec::new();
        let mut failed = Vec::new();
        for case in cases {
            eprintln!("bench: {} ...", case.name());
            match self.run_child(case) {
                Ok(record) => records.push(record),
                Err(e) => {
                    eprintln!("bench: {} failed: {e:#}", case.name());
                    failed.push(case.name());
                }
            }
        }
        let report = Report {
            implementation: "mocoop-burn".to_string(),
            date: report::today(),
            machine: report::machine(),
            threads: report::cpu_threads(),
            precision: self.precision.to_string(),
            cases: records,
        };
        print!("{}", report::table(&report));
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(&report)? + "\n";
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if !failed.is_empty() {
            bail!("case(s) failed: {}", failed.join(", "));
        }
        Ok(())
    }

    /// Runs `case` in a child process of this binary and reads its record.
    fn run_child(&self, case: CaseName) -> Result<CaseRecord> {
        let exe = std::env::current_exe().context("locating the mocoop binary")?;
        let mut command = Command::new(exe);
        command
            .arg("bench")
            .args(["--device", &self.device.to_string()])
            .args(["--geometry", self.geometry().name()])
            .args(["--steps", &self.steps.to_string()])
            .args(["--warmup", &self.warmup.to_string()])
            .args(["--batch", &self.batch.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .args(["--precision", &self.precision.to_string()])
            .args(["--case", case.name()]);
        if self.split == DeviceSplit::Classes {
            command.args(["--split", "classes"]);
        }
        if let Some(c) = self.classes {
            command.args(["--classes", &c.to_string()]);
        }
        if let Some(e) = self.experts {
            command.args(["--experts", &e.to_string()]);
        }
        if self.breakdown {
            command.arg("--breakdown");
        }
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .context("starting the case's process")?;
        if !output.status.success() {
            bail!("its process exited with {}", output.status);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(RECORD_PREFIX))
            .context("its process printed no record")?;
        Ok(serde_json::from_str(line)?)
    }
}

/// One case, run in this process on the chosen backend.
struct CaseJob {
    args: BenchArgs,
    case: CaseName,
}

impl OnDevices for CaseJob {
    type Output = CaseRecord;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<CaseRecord> {
        let args = &self.args;
        let device = devices[0].clone();
        let spec = args.spec(self.case);
        let schedule = Schedule {
            warmup: args.warmup,
            steps: args.steps,
            breakdown: args.breakdown && self.case != CaseName::EncodeImage,
            seed: args.seed,
            precision: args.precision,
            split: args.split,
        };
        check_precision::<B>(args.precision, args.device.main(), &device)?;
        let timing = measure::measure::<B>(&spec, args.geometry(), &schedule, &devices)?;
        let (device_mem_mib, device_note) = device_memory::device_memory(&device);
        let peak_rss_mib = timing.peak_rss_mib;
        let rss_note = peak_rss_mib
            .is_none()
            .then(|| "peak RSS n/a: no /proc/self/status on this system".to_string());
        let memory_note = match (rss_note, device_note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        Ok(CaseRecord {
            case: self.case.name().to_string(),
            geometry: args.geometry().name().to_string(),
            device: match (args.split, args.device.specs().len()) {
                (DeviceSplit::Classes, 2..) => format!("{} split by classes", args.device),
                _ => args.device.to_string(),
            },
            experts: spec.experts,
            classes: spec.classes,
            batch: spec.batch,
            ln_tuning: spec.ln_tuning,
            warmup: schedule.warmup,
            steps: schedule.steps,
            images_per_s: spec.batch as f64 * 1e3 / timing.ms_per_step,
            ms_per_step: timing.ms_per_step,
            peak_rss_mib,
            device_mem_mib,
            memory_note,
            note: spec.note,
            breakdown: timing.parts,
        })
    }
}
