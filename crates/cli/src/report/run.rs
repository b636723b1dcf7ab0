//! The report of one run (`mocoop train`): `RUN/report/` with `summary.md`, `report.html`, the
//! training curves and, for an evaluated MoCoOp run, the router's choices per class on the test
//! split and each expert's most confident test images.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::backend::Backend;
use mocoop_train::config::TrainConfig;
use mocoop_train::{Method, TrainReport, TrainedRun, run};
use serde::Serialize;

use crate::device::DeviceSpec;
use crate::model_args::CheckpointArgs;

use super::curves::training_curves;
use super::html::Page;
use super::routing::{Routing, expert_name};
use super::table::{Table, percent};

/// The report folder of a run.
pub fn folder(run: &Path) -> PathBuf {
    run.join("report")
}

/// A value's name in `config.json` (`"base2new"` for `Setting::Base2new`).
pub fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// The run in one line: method, dataset, setting, shots and seed.
pub fn headline(config: &TrainConfig) -> String {
    let data = &config.data;
    format!(
        "{} on {} ({}, {} shots, seed {})",
        config.method,
        data.dataset,
        serde_name(&data.setting),
        data.shots,
        data.seed
    )
}

/// Accuracy per evaluated split, and the harmonic mean.
fn results_table(report: &TrainReport) -> Table {
    let mut table = Table::new(["split", "classes", "images", "accuracy (%)"]);
    if let Some(results) = &report.results {
        for s in &results.splits {
            table.push([
                format!("{} {}", s.dataset, s.split),
                s.classes.to_string(),
                s.images.to_string(),
                percent(Some(s.accuracy)),
            ]);
        }
        if let Some(hm) = results.hm {
            table.push([
                "harmonic mean".into(),
                String::new(),
                String::new(),
                percent(Some(hm)),
            ]);
        }
    }
    table
}

/// The experts and the share of the last epoch's top-K slots each got in training.
fn experts_table(config: &TrainConfig, report: &TrainReport) -> Table {
    let load = report
        .epochs
        .last()
        .map(|e| e.expert_load.clone())
        .unwrap_or_default();
    let mut table = Table::new(["expert", "template", "training load (last epoch)"]);
    for (e, init) in config.mixture.experts.iter().enumerate() {
        let share = load
            .get(e)
            .map_or("-".into(), |l| format!("{:.1}%", 100.0 * l));
        table.push([e.to_string(), expert_name(init), share]);
    }
    table
}

/// Heat maps by class are drawn for at most this many classes (ImageNet's 1000 would be a poster).
const MAX_HEAT_MAP_CLASSES: usize = 100;

/// The router's choices on the test split of an evaluated MoCoOp run: the run's CLIP loaded again
/// on `device` (named `spec`) and every test image encoded once more.
fn routing<B: Backend>(
    report: &TrainReport,
    config: &TrainConfig,
    spec: &DeviceSpec,
    device: &B::Device,
) -> Result<Option<Routing>> {
    if config.method != Method::Mocoop || report.results.is_none() {
        return Ok(None);
    }
    let checkpoint = CheckpointArgs::of_run(config, None);
    let loaded = checkpoint.load::<B>(spec, device)?;
    let run = TrainedRun::load(&report.run, loaded.clip, &loaded.tokenizer, None, device)?;
    let dataset = mocoop_data::load_dataset(&config.data.dataset, &config.data.root)?;
    Routing::of_run(&run, &loaded.tokenizer, &dataset, &[], |_| None, device).map(Some)
}

/// Adds the routing figures (saved beside the page) to the page and the summary.
fn add_routing(routing: &Routing, dir: &Path, page: &mut Page, md: &mut String) -> Result<()> {
    page.heading("Which experts the router picks");
    md.push_str("\n## Which experts the router picks\n\n");
    if routing.by_class.len() <= MAX_HEAT_MAP_CLASSES {
        let by_class = routing.heat_map("class", &routing.by_class)?;
        by_class.save(dir, "routing_by_class")?;
        page.figure(
            &by_class,
            "Router choices per class on the test images (base and new).",
        );
        md.push_str("Router choices per class on the test images: `routing_by_class.png`.\n");
    }
    let examples = routing.examples_grid()?;
    examples.save(dir, "expert_examples")?;
    page.heading("Routing examples");
    page.figure(
        &examples,
        "The test images each expert is picked for most confidently.",
    );
    md.push_str(
        "The test images each expert is picked for most confidently: `expert_examples.png`.\n",
    );
    Ok(())
}

/// Writes `RUN/report/` for a finished run; routing figures are left out, with a note, when the
/// test images cannot be routed (see [`routing`]).
pub fn write<B: Backend>(
    report: &TrainReport,
    spec: &DeviceSpec,
    device: &B::Device,
) -> Result<PathBuf> {
    let config = run::read_config(&report.run, None)?;
    let dir = folder(&report.run);
    std::fs::create_dir_all(&dir)?;
    let title = format!("mocoop run: {}", headline(&config));
    let results = results_table(report);
    let experts = experts_table(&config, report);
    let mut md = format!("# {title}\n\n{}", results.markdown());
    let mut page = Page::new(&title);
    page.table(&results);
    if config.method != mocoop_train::Method::ZeroShot {
        md.push_str(&format!("\n## Experts\n\n{}", experts.markdown()));
        page.heading("Experts");
        page.table(&experts);
    }
    if !report.epochs.is_empty() {
        let name = config.method.to_string();
        let curves = training_curves(
            "Training curves (means per epoch)",
            &[(name.as_str(), report.epochs.as_slice())],
        )?;
        curves.save(&dir, "training_curves")?;
        md.push_str(
            "\nTraining curves (each loss term, training accuracy, the learning rate): \
             `training_curves.png` / `.svg`.\n",
        );
        page.heading("Training");
        page.figure(
            &curves,
            "Means per epoch of each loss term, training accuracy and the learning rate.",
        );
    }
    match routing::<B>(report, &config, spec, device) {
        Ok(Some(routing)) => add_routing(&routing, &dir, &mut page, &mut md)?,
        Ok(None) => {}
        Err(e) => eprintln!("note: the report has no routing figures: {e:#}"),
    }
    if !report.notes.is_empty() {
        page.heading("Notes");
        for note in &report.notes {
            page.paragraph(note);
        }
    }
    page.heading("Configuration");
    page.code(&serde_json::to_string_pretty(&config)?);
    md.push_str("\nEverything, with the configuration, in one page: `report.html`.\n");
    std::fs::write(dir.join("summary.md"), md)?;
    page.write(&dir.join("report.html"))?;
    Ok(dir)
}
