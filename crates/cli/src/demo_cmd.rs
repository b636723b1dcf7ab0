//! `mocoop demo`: the whole method on the generated shape world, with no download.
//!
//! Writes the world's benchmark, loads the small CLIP shipped in the binary, runs zero-shot CLIP,
//! CoOp and MoCoOp base-to-new through the same training and evaluation code as `mocoop train`,
//! prints the table and writes a report folder (results JSON, Markdown summary, PNG plots of the
//! training curves and of the router's expert choices per image style and per class).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Parser;
use mocoop_data::{Loader, LoaderConfig, load_dataset};
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, Precision};
use mocoop_train::config::Setting;
use mocoop_train::{Method, Recipe, RunResults, TrainReport, TrainedRun, train};
use mocoop_world::{BenchmarkConfig, Style, style_from_path, write_benchmark};
use serde_json::json;

use crate::device::{DeviceSpec, OnBackend};
use crate::model_args::CheckpointArgs;
use crate::plot;
use crate::train_cmd::{RunData, TrainFlags};

/// The small CLIP pretrained on the shape world (see assets/README.md for how it was made).
const SHIPPED_CLIP: &[u8] = include_bytes!("../../../assets/shapeworld-clip.safetensors");
/// The benchmark's name in the dataset registry and the template-group table.
const DATASET: &str = "shapeworld";

/// Runs zero-shot CLIP, CoOp and MoCoOp base-to-new on the generated shape world.
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
    /// Training epochs of CoOp and MoCoOp (the base-to-new recipe's; fewer warm up for their
    /// share of the recipe's warm-up).
    #[arg(long, default_value_t = Recipe::for_run(Method::Mocoop, DATASET).epochs)]
    epochs: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 30)]
    test_images: usize,
}

impl DemoArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }

    fn flags(&self, method: &str) -> Result<TrainFlags> {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            flags: TrainFlags,
        }
        let epochs = self.epochs.to_string();
        let args = ["demo", "--method", method, "--epochs", &epochs];
        Ok(Flags::try_parse_from(args)
            .context("demo training flags")?
            .flags)
    }
}

/// One method's outcome.
struct MethodRun {
    name: &'static str,
    report: TrainReport,
}

impl OnBackend for DemoArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        anyhow::ensure!(self.epochs >= 2, "--epochs must be at least 2");
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let data_root = self.out.join("data");
        eprintln!(
            "[1/5] generating the shape-world benchmark in {}",
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
        for (step, (name, method)) in [
            ("zero-shot CLIP", "zero-shot"),
            ("CoOp", "coop"),
            ("MoCoOp", "mocoop"),
        ]
        .into_iter()
        .enumerate()
        {
            eprintln!("[{}/5] {name}", step + 2);
            let flags = self.flags(method)?;
            let config = flags.config(&checkpoint, &run_data)?;
            let loaded = checkpoint.load::<B>(&self.device, &device)?;
            let run_dir = self.out.join("runs").join(method);
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
        write_report(
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

/// How often the router picked each expert, per image style and per class (top-K slots counted).
struct Routing {
    experts: usize,
    by_style: BTreeMap<String, Vec<usize>>,
    by_class: Vec<(String, Vec<usize>)>,
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
    let classifier = run.classifier(tokenizer, &dataset.classnames, DATASET, device)?;
    let experts = classifier.experts();
    let size = run.clip().config().vision.image_size as u32;
    let items = dataset.test.clone();
    let loader = Loader::new(DATASET, items.clone(), LoaderConfig::test(size, 64));
    let mut by_style: BTreeMap<String, Vec<usize>> = Style::ALL
        .iter()
        .map(|s| (s.name().to_string(), vec![0; experts]))
        .collect();
    let mut by_class: Vec<(String, Vec<usize>)> = dataset
        .classnames
        .iter()
        .map(|c| (c.clone(), vec![0; experts]))
        .collect();
    for batch in loader.epoch::<B>(0, device) {
        let batch = batch?;
        let gates = classifier
            .predict(batch.images)
            .gates
            .context("a MoCoOp run routes its images")?;
        let gates = crate::model_args::to_rows(gates)?;
        for (row, &index) in gates.iter().zip(&batch.indices) {
            let item = &items[index];
            let style = style_from_path(&item.path)
                .map(|s| s.name().to_string())
                .unwrap_or_else(|| "unknown".into());
            for (e, &g) in row.iter().enumerate() {
                if g > 0.0 {
                    by_style
                        .entry(style.clone())
                        .or_insert_with(|| vec![0; experts])[e] += 1;
                    by_class[item.label].1[e] += 1;
                }
            }
        }
    }
    Ok(Routing {
        experts,
        by_style,
        by_class,
    })
}

fn accuracy(results: &Option<RunResults>, split: &str) -> Option<f64> {
    results
        .as_ref()?
        .splits
        .iter()
        .find(|s| s.split == split)
        .map(|s| s.accuracy)
}

fn print_table(runs: &[MethodRun]) {
    println!("{:<16} {:>7} {:>7} {:>7}", "method", "base", "new", "HM");
    for run in runs {
        let r = &run.report.results;
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let hm = r.as_ref().and_then(|r| r.hm);
        println!(
            "{:<16} {:>7} {:>7} {:>7}",
            run.name,
            cell(accuracy(r, "base")),
            cell(accuracy(r, "new")),
            cell(hm)
        );
    }
}

fn write_report(
    dir: &Path,
    runs: &[MethodRun],
    routing: &Routing,
    classes: usize,
    num_base: usize,
) -> Result<()> {
    let results: BTreeMap<&str, serde_json::Value> = runs
        .iter()
        .map(|r| {
            let epochs: Vec<_> = r.report.epochs.iter().map(|e| json!(e.means)).collect();
            (
                r.name,
                json!({"results": r.report.results, "epochs": epochs}),
            )
        })
        .collect();
    let routing_json = json!({
        "experts": routing.experts,
        "by_style": routing.by_style,
        "by_class": routing.by_class,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json!({"methods": results, "routing": routing_json}))?,
    )?;

    let curves: Vec<(String, Vec<f64>)> = runs
        .iter()
        .filter(|r| !r.report.epochs.is_empty())
        .map(|r| {
            let losses = r
                .report
                .epochs
                .iter()
                .map(|e| e.means.get("loss").copied().unwrap_or(f64::NAN))
                .collect();
            (r.name.to_string(), losses)
        })
        .collect();
    plot::line_chart(&curves).save(dir.join("training_curves.png"))?;
    let style_rows: Vec<(String, Vec<usize>)> = routing
        .by_style
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    plot::heat_map(&style_rows).save(dir.join("routing_by_style.png"))?;
    plot::heat_map(&routing.by_class).save(dir.join("routing_by_class.png"))?;

    let mut md = String::from("# mocoop demo: base-to-new on the generated shape world\n\n");
    md.push_str(&format!(
        "{classes} colour-shape classes: the first {num_base} (base) were seen in pretraining, the \
         other {} (new) never were. CoOp and MoCoOp train on the base classes only.\n\n",
        classes - num_base
    ));
    md.push_str("| method | base | new | HM |\n|---|---|---|---|\n");
    for run in runs {
        let r = &run.report.results;
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            run.name,
            cell(accuracy(r, "base")),
            cell(accuracy(r, "new")),
            cell(r.as_ref().and_then(|r| r.hm))
        ));
    }
    md.push_str(
        "\n## Which experts the router picks\n\nCounts of top-K router choices over every test \
         image (base and new), computed from the trained router's decisions \
         (`routing_by_style.png`, `routing_by_class.png`; darker = more often).\n\n",
    );
    md.push_str(&routing_table("style", &style_rows, routing.experts));
    md.push_str("\nTraining curves (mean loss per epoch): `training_curves.png`.\n");
    std::fs::write(dir.join("summary.md"), md)?;
    Ok(())
}

/// A Markdown table of routing counts; expert columns are named by their group's first template.
fn routing_table(label: &str, rows: &[(String, Vec<usize>)], experts: usize) -> String {
    let groups = mocoop_model::templates::TemplateTable::builtin()
        .groups(DATASET)
        .map(|g| g.groups().to_vec())
        .unwrap_or_default();
    let mut out = format!("| {label} |");
    for e in 0..experts {
        match groups.get(e).and_then(|g| g.first()) {
            Some(template) => out.push_str(&format!(" expert {e}: `{template}` |")),
            None => out.push_str(&format!(" expert {e} |")),
        }
    }
    out.push_str(&format!("\n|---|{}\n", "---|".repeat(experts)));
    for (name, counts) in rows {
        out.push_str(&format!("| {name} |"));
        for c in counts {
            out.push_str(&format!(" {c} |"));
        }
        out.push('\n');
    }
    out
}
