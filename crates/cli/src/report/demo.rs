//! The report folder of `mocoop demo`: `results.json`, `summary.md`, `report.html` and the
//! figures (PNG and SVG) of the training curves, the router's choices and its example images.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use mocoop_train::{EpochRecord, RunResults, TrainReport, run};
use serde_json::json;

use super::curves::training_curves;
use super::html::Page;
use super::plots::Figure;
use super::routing::Routing;
use super::table::{Table, percent};

/// One method's outcome.
pub struct MethodRun {
    /// The method's name in the table.
    pub name: &'static str,
    /// What training (and evaluation) reported.
    pub report: TrainReport,
}

/// The accuracy of `split` in `results`.
fn accuracy(results: &Option<RunResults>, split: &str) -> Option<f64> {
    results
        .as_ref()?
        .splits
        .iter()
        .find(|s| s.split == split)
        .map(|s| s.accuracy)
}

/// The base / new / HM table.
pub fn results_table(runs: &[MethodRun]) -> Table {
    let mut table = Table::new(["method", "base", "new", "HM"]);
    for run in runs {
        let r = &run.report.results;
        table.push([
            run.name.to_string(),
            percent(accuracy(r, "base")),
            percent(accuracy(r, "new")),
            percent(r.as_ref().and_then(|r| r.hm)),
        ]);
    }
    table
}

/// Writes the report into `dir`.
pub fn write(
    dir: &Path,
    runs: &[MethodRun],
    routing: &Routing,
    classes: usize,
    num_base: usize,
) -> Result<()> {
    write_results(dir, runs, routing)?;
    let curves: Vec<(&str, &[EpochRecord])> = runs
        .iter()
        .map(|r| (r.name, r.report.epochs.as_slice()))
        .collect();
    let figures = [
        (
            "training_curves",
            training_curves("Training curves (means per epoch)", &curves)?,
        ),
        (
            "routing_by_style",
            routing.heat_map("image style", &routing.style_rows())?,
        ),
        (
            "routing_by_class",
            routing.heat_map("class", &routing.by_class)?,
        ),
        ("expert_examples", routing.examples_grid()?),
    ];
    for (stem, figure) in &figures {
        figure.save(dir, stem)?;
    }
    let intro = format!(
        "{classes} colour-shape classes: the first {num_base} (base) were seen in pretraining, the \
         other {} (new) never were. The prompt learners train on the base classes only.",
        classes - num_base
    );
    let title = "mocoop demo: base-to-new on the generated shape world";
    let results = results_table(runs);
    let style_table = routing.table("style", &routing.style_rows());
    let mut md = format!("# {title}\n\n{intro}\n\n{}", results.markdown());
    md.push_str(
        "\n## Which experts the router picks\n\nCounts of top-K router choices over every test \
         image (base and new), computed from the trained router's decisions \
         (`routing_by_style.png`, `routing_by_class.png`; darker = more often; the images each \
         expert is picked for most confidently: `expert_examples.png`).\n\n",
    );
    md.push_str(&style_table.markdown());
    md.push_str(
        "\nTraining curves (means per epoch of each loss term, training accuracy and the learning \
         rate): `training_curves.png` (SVG beside every PNG). Everything in one page: \
         `report.html`.\n",
    );
    std::fs::write(dir.join("summary.md"), md)?;
    html_page(title, &intro, &results, &style_table, &figures, runs)?
        .write(&dir.join("report.html"))
}

/// `results.json`: every method's results and epoch means, and the routing counts.
fn write_results(dir: &Path, runs: &[MethodRun], routing: &Routing) -> Result<()> {
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
        "experts": routing.experts.len(),
        "templates": routing.experts,
        "by_style": routing.by_style,
        "by_class": routing.by_class,
    });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json!({"methods": results, "routing": routing_json}))?,
    )?;
    Ok(())
}

fn html_page(
    title: &str,
    intro: &str,
    results: &Table,
    style_table: &Table,
    figures: &[(&str, Figure)],
    runs: &[MethodRun],
) -> Result<Page> {
    let mut page = Page::new(title);
    page.paragraph(intro);
    page.table(results);
    page.heading("Training");
    page.figure(
        &figures[0].1,
        "Means per epoch of each loss term, training accuracy and the learning rate.",
    );
    page.heading("Which experts the router picks");
    page.paragraph("Counts of top-K router choices over every test image (base and new).");
    page.table(style_table);
    page.figure(&figures[1].1, "Router choices per image style.");
    page.figure(&figures[2].1, "Router choices per class.");
    page.heading("Routing examples");
    page.figure(
        &figures[3].1,
        "The test images each expert is picked for most confidently (highest gate weight first).",
    );
    page.heading("Configuration");
    for run in runs {
        let path = run.report.run.join(run::CONFIG_FILE);
        let config = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        page.paragraph(&format!("{} ({})", run.name, path.display()));
        page.code(&config);
    }
    Ok(page)
}
