//! Result tables of the CoOp-family protocols: per dataset the mean over seeds with its spread,
//! and the average row.
//!
//! - base-to-new: base, new and harmonic-mean accuracy. As in the papers, a dataset's HM is the HM
//!   of its mean base and mean new accuracy (its spread is that of the per-seed HMs), and the
//!   average row's HM is the HM of the average base and new accuracies.
//! - few-shot: accuracy per number of shots.
//! - transfer (domain generalisation, cross-dataset): accuracy on the source and on each target.

use serde::{Deserialize, Serialize};

use crate::run::{RunResults, harmonic_mean};

pub mod comparison;

/// One finished cell of a protocol grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The training dataset.
    pub dataset: String,
    /// The seed.
    pub seed: u64,
    /// Training images per class.
    pub shots: usize,
    /// The evaluated dataset when it is not the training one (transfer protocols).
    pub target: Option<String>,
    /// The accuracies.
    pub results: RunResults,
}

impl CellResult {
    fn accuracy(&self, split: &str) -> Option<f64> {
        self.results
            .splits
            .iter()
            .find(|s| s.split == split)
            .map(|s| s.accuracy)
    }
}

/// A mean over seeds and its (sample) standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (0 for a single value, or for derived values).
    pub std: f64,
    /// Values averaged.
    pub n: usize,
}

impl Stat {
    /// Mean and spread of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, std, n })
    }

    fn with_mean(self, mean: f64) -> Self {
        Self { mean, ..self }
    }
}

/// A result table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Title (the protocol and method).
    pub title: String,
    /// Column headers after the row name.
    pub columns: Vec<String>,
    /// Rows: a name and one cell per column.
    pub rows: Vec<(String, Vec<Option<Stat>>)>,
}

fn datasets_in_order(cells: &[CellResult]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        if !out.contains(&c.dataset) {
            out.push(c.dataset.clone());
        }
    }
    out
}

/// Mean over rows of each column's mean (the "Average" row).
fn average_row(rows: &[(String, Vec<Option<Stat>>)], columns: usize) -> Vec<Option<Stat>> {
    (0..columns)
        .map(|j| {
            let means: Vec<f64> = rows
                .iter()
                .filter_map(|(_, r)| r[j].map(|s| s.mean))
                .collect();
            Stat::of(&means).map(|s| Stat { std: 0.0, ..s })
        })
        .collect()
}

/// Base / new / HM per dataset, and the average.
pub fn base2new_table(title: &str, cells: &[CellResult]) -> Table {
    let mut rows = Vec::new();
    for dataset in datasets_in_order(cells) {
        let mine: Vec<&CellResult> = cells.iter().filter(|c| c.dataset == dataset).collect();
        let base: Vec<f64> = mine.iter().filter_map(|c| c.accuracy("base")).collect();
        let new: Vec<f64> = mine.iter().filter_map(|c| c.accuracy("new")).collect();
        let hms: Vec<f64> = mine
            .iter()
            .filter_map(|c| Some(harmonic_mean(c.accuracy("base")?, c.accuracy("new")?)))
            .collect();
        let (b, n) = (Stat::of(&base), Stat::of(&new));
        let hm = match (b, n, Stat::of(&hms)) {
            (Some(b), Some(n), Some(h)) => Some(h.with_mean(harmonic_mean(b.mean, n.mean))),
            _ => None,
        };
        rows.push((dataset, vec![b, n, hm]));
    }
    let mut average = average_row(&rows, 3);
    if let (Some(b), Some(n), Some(h)) = (average[0], average[1], average[2]) {
        average[2] = Some(h.with_mean(harmonic_mean(b.mean, n.mean)));
    }
    if rows.len() > 1 {
        rows.push(("Average".into(), average));
    }
    Table {
        title: title.to_string(),
        columns: vec!["Base".into(), "New".into(), "HM".into()],
        rows,
    }
}

/// Accuracy per number of shots, per dataset, and the average.
pub fn fewshot_table(title: &str, cells: &[CellResult]) -> Table {
    let mut shots: Vec<usize> = cells.iter().map(|c| c.shots).collect();
    shots.sort_unstable();
    shots.dedup();
    let mut rows = Vec::new();
    for dataset in datasets_in_order(cells) {
        let row = shots
            .iter()
            .map(|&k| {
                let values: Vec<f64> = cells
                    .iter()
                    .filter(|c| c.dataset == dataset && c.shots == k)
                    .filter_map(|c| c.accuracy("all"))
                    .collect();
                Stat::of(&values)
            })
            .collect();
        rows.push((dataset, row));
    }
    if rows.len() > 1 {
        let average = average_row(&rows, shots.len());
        rows.push(("Average".into(), average));
    }
    Table {
        title: title.to_string(),
        columns: shots.iter().map(|k| format!("{k} shots")).collect(),
        rows,
    }
}

/// Accuracy on the source dataset and each target, per source, with the targets' average.
pub fn transfer_table(title: &str, cells: &[CellResult], targets: &[String]) -> Table {
    let mut rows = Vec::new();
    for dataset in datasets_in_order(cells) {
        let stat = |target: Option<&str>| {
            let values: Vec<f64> = cells
                .iter()
                .filter(|c| c.dataset == dataset && c.target.as_deref() == target)
                .filter_map(|c| c.accuracy("all"))
                .collect();
            Stat::of(&values)
        };
        let mut row = vec![stat(None)];
        let target_stats: Vec<Option<Stat>> = targets.iter().map(|t| stat(Some(t))).collect();
        let means: Vec<f64> = target_stats.iter().flatten().map(|s| s.mean).collect();
        row.extend(target_stats);
        row.push(Stat::of(&means).map(|s| Stat { std: 0.0, ..s }));
        rows.push((dataset, row));
    }
    let mut columns = vec!["Source".to_string()];
    columns.extend(targets.iter().cloned());
    columns.push("Target average".into());
    Table {
        title: title.to_string(),
        columns,
        rows,
    }
}

/// The table as Markdown: `mean ± std` per cell (`mean` alone for derived values).
pub fn markdown(table: &Table) -> String {
    let mut out = format!("## {}\n\n| Dataset |", table.title);
    for c in &table.columns {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str("\n|---|");
    for _ in &table.columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for (name, cells) in &table.rows {
        let name = if name == "Average" {
            "**Average**".to_string()
        } else {
            name.clone()
        };
        out.push_str(&format!("| {name} |"));
        for cell in cells {
            out.push_str(&format!(" {} |", stat_text(cell)));
        }
        out.push('\n');
    }
    out
}

/// A table cell as the tables print it: `mean ± std`, the mean alone for one seed or a derived
/// value, `–` for a missing one.
pub fn stat_text(stat: &Option<Stat>) -> String {
    match stat {
        Some(s) if s.n > 1 && s.std > 0.0 => format!("{:.2} ± {:.2}", s.mean, s.std),
        Some(s) => format!("{:.2}", s.mean),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;
    use crate::run::SplitResult;

    pub(super) fn cell(
        dataset: &str,
        seed: u64,
        shots: usize,
        splits: &[(&str, f64)],
    ) -> CellResult {
        CellResult {
            dataset: dataset.into(),
            seed,
            shots,
            target: None,
            results: RunResults::new(
                Method::Mocoop,
                splits
                    .iter()
                    .map(|(s, a)| SplitResult {
                        dataset: dataset.into(),
                        split: s.to_string(),
                        classes: 2,
                        images: 10,
                        correct: 0,
                        accuracy: *a,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn base2new_means_spreads_and_harmonic_means() {
        let cells = vec![
            cell("dtd", 1, 16, &[("base", 80.0), ("new", 60.0)]),
            cell("dtd", 2, 16, &[("base", 82.0), ("new", 62.0)]),
            cell("eurosat", 1, 16, &[("base", 90.0), ("new", 70.0)]),
        ];
        let table = base2new_table("t", &cells);
        assert_eq!(table.rows.len(), 3);
        let dtd = &table.rows[0].1;
        assert_eq!(dtd[0].unwrap().mean, 81.0);
        assert!((dtd[0].unwrap().std - 2f64.sqrt()).abs() < 1e-12);
        assert!((dtd[2].unwrap().mean - harmonic_mean(81.0, 61.0)).abs() < 1e-12);
        let avg = &table.rows[2].1;
        assert_eq!(avg[0].unwrap().mean, 85.5);
        assert!((avg[2].unwrap().mean - harmonic_mean(85.5, 65.5)).abs() < 1e-12);
        let md = markdown(&table);
        assert!(md.contains("| dtd | 81.00 ± 1.41 | 61.00 ± 1.41 |"), "{md}");
        assert!(md.contains("**Average**"), "{md}");
    }

    #[test]
    fn fewshot_and_transfer_tables() {
        let cells = vec![
            cell("dtd", 1, 1, &[("all", 40.0)]),
            cell("dtd", 1, 16, &[("all", 60.0)]),
            cell("dtd", 2, 16, &[("all", 64.0)]),
        ];
        let table = fewshot_table("f", &cells);
        assert_eq!(table.columns, ["1 shots", "16 shots"]);
        assert_eq!(table.rows[0].1[1].unwrap().mean, 62.0);
        let mut t = cell("imagenet", 1, 16, &[("all", 70.0)]);
        let mut a = t.clone();
        a.target = Some("imagenet_a".into());
        a.results.splits[0].accuracy = 50.0;
        t.target = None;
        let table = transfer_table("d", &[t, a], &["imagenet_a".into(), "imagenet_r".into()]);
        let row = &table.rows[0].1;
        assert_eq!(row[0].unwrap().mean, 70.0);
        assert_eq!(row[1].unwrap().mean, 50.0);
        assert!(row[2].is_none());
        assert_eq!(row[3].unwrap().mean, 50.0);
        assert!(markdown(&table).contains("| imagenet | 70.00 | 50.00 | – | 50.00 |"));
    }
}
