//! The report of a protocol grid: `OUT/report-<protocol>/` with `summary.md`, `report.html` and
//! the figures of every method whose results table is in `OUT` (`results-<protocol>-<method>.json`,
//! one per `mocoop protocol` invocation): accuracy against shots per dataset (few-shot) and base /
//! new / HM bars per dataset and method (base-to-new). With several methods, their tables come
//! first merged into one, a row per dataset and method, as the papers print them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mocoop_train::protocol::comparison::comparison;
use mocoop_train::protocol::{CellResult, Table as ResultsTable, stat_text};
use serde::Deserialize;

use super::html::Page;
use super::plots::{self, Bars, Figure, Panel, Series, XAxis};
use super::table::Table;

/// What `results-<protocol>-<method>.json` holds that the report reads.
#[derive(Debug, Deserialize)]
struct MethodResults {
    method: String,
    cells: Vec<CellResult>,
    table: ResultsTable,
}

/// Every method's results of `protocol` in `out`, in method-name order.
fn read_all(out: &Path, protocol: &str) -> Result<Vec<MethodResults>> {
    let prefix = format!("results-{protocol}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".json")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)?;
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
        })
        .collect()
}

/// A protocol results table as a report table.
fn as_table(results: &ResultsTable) -> Table {
    let mut table =
        Table::new(std::iter::once("Dataset".to_string()).chain(results.columns.clone()));
    for (name, cells) in &results.rows {
        table.push(std::iter::once(name.clone()).chain(cells.iter().map(stat_text)));
    }
    table
}

/// Every method's table merged into one (a row per dataset and method, the average rows last),
/// when there are several methods and their tables have the same columns.
fn comparison_table(methods: &[MethodResults]) -> Option<Table> {
    if methods.len() < 2 {
        return None;
    }
    let tables: Vec<(String, ResultsTable)> = methods
        .iter()
        .map(|m| (m.method.clone(), m.table.clone()))
        .collect();
    let merged = comparison("", &tables).ok()?;
    let header = ["Dataset".to_string(), "Method".to_string()];
    let mut table = Table::new(header.into_iter().chain(merged.columns.clone()));
    for row in &merged.rows {
        let names = [row.dataset.clone(), row.method.clone()];
        table.push(names.into_iter().chain(row.cells.iter().map(stat_text)));
    }
    Some(table)
}

/// Accuracy against shots: one panel per dataset (and the average), one line per method.
fn fewshot_figure(methods: &[MethodResults]) -> Result<Option<Figure>> {
    let mut datasets: Vec<String> = Vec::new();
    for m in methods {
        for (name, _) in &m.table.rows {
            if !datasets.contains(name) {
                datasets.push(name.clone());
            }
        }
    }
    let shots = |column: &str| column.strip_suffix(" shots")?.parse::<f64>().ok();
    let panels: Vec<Panel> = datasets
        .iter()
        .map(|dataset| Panel {
            title: dataset.clone(),
            x_label: "shots per class".into(),
            y_label: "accuracy (%)".into(),
            x_axis: XAxis::Log2,
            series: methods
                .iter()
                .enumerate()
                .filter_map(|(colour, m)| {
                    let (_, stats) = m.table.rows.iter().find(|(name, _)| name == dataset)?;
                    let points = m
                        .table
                        .columns
                        .iter()
                        .zip(stats)
                        .filter_map(|(c, s)| Some((shots(c)?, s.as_ref()?.mean)))
                        .collect();
                    Some(Series {
                        name: m.method.clone(),
                        points,
                        colour,
                    })
                })
                .collect(),
        })
        .collect();
    if panels.is_empty() {
        return Ok(None);
    }
    plots::line_panels("Few-shot accuracy (mean over seeds)", &panels).map(Some)
}

/// Base, new and HM bars per dataset and method.
fn base2new_figure(methods: &[MethodResults]) -> Result<Option<Figure>> {
    let mut groups = Vec::new();
    let mut values = Vec::new();
    for m in methods {
        for (dataset, stats) in &m.table.rows {
            groups.push(format!("{dataset} · {}", m.method));
            values.push(
                stats
                    .iter()
                    .map(|s| s.map_or(f64::NAN, |s| s.mean))
                    .collect(),
            );
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    plots::bars(&Bars {
        title: "Base-to-new: base, new and harmonic mean (mean over seeds)".into(),
        y_label: "accuracy (%)".into(),
        groups,
        bars: vec!["base".into(), "new".into(), "HM".into()],
        values,
    })
    .map(Some)
}

/// The configuration of `method`'s first cell (every cell differs only in dataset, shots, seed).
fn first_config(out: &Path, m: &MethodResults) -> Option<(PathBuf, String)> {
    let c = m.cells.first()?;
    let dir = out
        .join(&m.method)
        .join(&c.dataset)
        .join(format!("shots{}-seed{}", c.shots, c.seed));
    let path = dir.join(mocoop_train::run::CONFIG_FILE);
    Some((path.clone(), std::fs::read_to_string(path).ok()?))
}

/// Writes `out/report-<protocol>/` from every method's results of `protocol` in `out`.
pub fn write(out: &Path, protocol: &str) -> Result<PathBuf> {
    let methods = read_all(out, protocol)?;
    let dir = out.join(format!("report-{protocol}"));
    std::fs::create_dir_all(&dir)?;
    let title = format!("mocoop protocol {protocol}");
    let mut page = Page::new(&title);
    let mut md = format!("# {title}\n\n");
    if let Some(all) = comparison_table(&methods) {
        page.heading("All methods");
        page.table(&all);
        md.push_str(&format!("## All methods\n\n{}\n", all.markdown()));
    }
    for m in &methods {
        let table = as_table(&m.table);
        page.heading(&m.table.title);
        page.table(&table);
        md.push_str(&format!("## {}\n\n{}\n", m.table.title, table.markdown()));
    }
    let figure = match protocol {
        "fewshot" => fewshot_figure(&methods)?.map(|f| ("accuracy_vs_shots", f)),
        "base2new" => base2new_figure(&methods)?.map(|f| ("base_new_hm", f)),
        _ => None,
    };
    if let Some((stem, figure)) = &figure {
        figure.save(&dir, stem)?;
        page.heading("Figure");
        page.figure(figure, "Means over seeds, per dataset and method.");
        md.push_str(&format!("Figure: `{stem}.png` / `{stem}.svg`.\n\n"));
    }
    page.heading("Configuration");
    for (path, config) in methods.iter().filter_map(|m| first_config(out, m)) {
        page.paragraph(&path.display().to_string());
        page.code(&config);
    }
    md.push_str("Everything, with each method's configuration, in one page: `report.html`.\n");
    std::fs::write(dir.join("summary.md"), md)?;
    page.write(&dir.join("report.html"))?;
    Ok(dir)
}
