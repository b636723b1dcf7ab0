//! Several methods' results of one protocol in one table, as the papers print them: per dataset a
//! row for each method (base / new / HM, accuracy per shots, or source and targets, each with its
//! spread over seeds), and the average rows, one per method, last.

use serde::{Deserialize, Serialize};

use super::{Stat, Table, stat_text};

/// The name of the average row in every protocol table.
const AVERAGE: &str = "Average";

/// One method's row for one dataset (or for the average).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    /// The dataset, or `Average`.
    pub dataset: String,
    /// The method.
    pub method: String,
    /// One cell per column.
    pub cells: Vec<Option<Stat>>,
}

/// Several methods' tables of one protocol merged into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonTable {
    /// Title (the protocol).
    pub title: String,
    /// Column headers after the dataset and the method.
    pub columns: Vec<String>,
    /// Datasets in the order they first appear, each with its methods in the order given; the
    /// average rows last.
    pub rows: Vec<ComparisonRow>,
}

/// Merges each method's table (`(method, table)`, in the order the rows should list them).
/// Every table must have the same columns: they come from one grid.
pub fn comparison(title: &str, tables: &[(String, Table)]) -> Result<ComparisonTable, String> {
    let columns = tables
        .first()
        .map(|(_, t)| t.columns.clone())
        .unwrap_or_default();
    if let Some((method, _)) = tables.iter().find(|(_, t)| t.columns != columns) {
        return Err(format!(
            "the table of {method} has other columns than the first method's: they are not one grid"
        ));
    }
    let mut datasets: Vec<&str> = Vec::new();
    for (_, table) in tables {
        for (name, _) in &table.rows {
            if name != AVERAGE && !datasets.contains(&name.as_str()) {
                datasets.push(name);
            }
        }
    }
    datasets.push(AVERAGE);
    let mut rows = Vec::new();
    for dataset in datasets {
        for (method, table) in tables {
            if let Some((_, cells)) = table.rows.iter().find(|(name, _)| name == dataset) {
                rows.push(ComparisonRow {
                    dataset: dataset.to_string(),
                    method: method.clone(),
                    cells: cells.clone(),
                });
            }
        }
    }
    Ok(ComparisonTable {
        title: title.to_string(),
        columns,
        rows,
    })
}

/// The table as Markdown, the average rows in bold.
pub fn comparison_markdown(table: &ComparisonTable) -> String {
    let mut out = format!("## {}\n\n| Dataset | Method |", table.title);
    for c in &table.columns {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str("\n|---|---|");
    for _ in &table.columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in &table.rows {
        let dataset = if row.dataset == AVERAGE {
            format!("**{AVERAGE}**")
        } else {
            row.dataset.clone()
        };
        out.push_str(&format!("| {dataset} | {} |", row.method));
        for cell in &row.cells {
            out.push_str(&format!(" {} |", stat_text(cell)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::cell;
    use crate::protocol::{base2new_table, fewshot_table};

    fn base2new(rows: &[(&str, u64, f64, f64)]) -> Table {
        let cells: Vec<_> = rows
            .iter()
            .map(|&(d, seed, b, n)| cell(d, seed, 16, &[("base", b), ("new", n)]))
            .collect();
        base2new_table("t", &cells)
    }

    #[test]
    fn a_row_per_dataset_and_method_then_an_average_row_per_method() {
        let coop = base2new(&[
            ("dtd", 1, 80.0, 50.0),
            ("dtd", 2, 82.0, 54.0),
            ("eurosat", 1, 90.0, 60.0),
        ]);
        let mocoop = base2new(&[
            ("dtd", 1, 81.0, 70.0),
            ("dtd", 2, 83.0, 72.0),
            ("eurosat", 1, 91.0, 75.0),
        ]);
        let table = comparison(
            "base2new",
            &[("coop".into(), coop.clone()), ("mocoop".into(), mocoop)],
        )
        .unwrap();
        let order: Vec<(&str, &str)> = table
            .rows
            .iter()
            .map(|r| (r.dataset.as_str(), r.method.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("dtd", "coop"),
                ("dtd", "mocoop"),
                ("eurosat", "coop"),
                ("eurosat", "mocoop"),
                ("Average", "coop"),
                ("Average", "mocoop"),
            ]
        );
        // Each row is that method's own row: the spread over seeds and the HM of the means.
        assert_eq!(table.rows[0].cells, coop.rows[0].1);
        assert_eq!(table.rows[4].cells, coop.rows[2].1);
        let md = comparison_markdown(&table);
        assert!(
            md.contains("| Dataset | Method | Base | New | HM |"),
            "{md}"
        );
        assert!(
            md.contains("| dtd | mocoop | 82.00 ± 1.41 | 71.00 ± 1.41 |"),
            "{md}"
        );
        let average_hm = crate::run::harmonic_mean(86.5, 73.0);
        assert!(
            md.contains(&format!(
                "| **Average** | mocoop | 86.50 | 73.00 | {average_hm:.2} |"
            )),
            "{md}"
        );
    }

    #[test]
    fn one_dataset_still_gets_its_average_rows_and_other_grids_are_refused() {
        let coop = base2new(&[("dtd", 1, 80.0, 50.0)]);
        let mocoop = base2new(&[("dtd", 1, 81.0, 70.0)]);
        let table = comparison("b", &[("coop".into(), coop), ("mocoop".into(), mocoop)]).unwrap();
        // A single-dataset table has no average row of its own: the dataset rows are all there is.
        assert_eq!(table.rows.len(), 2);
        let shots = fewshot_table("f", &[cell("dtd", 1, 4, &[("all", 40.0)])]);
        let err = comparison(
            "b",
            &[
                ("coop".into(), base2new(&[("dtd", 1, 80.0, 50.0)])),
                ("x".into(), shots),
            ],
        )
        .unwrap_err();
        assert!(err.contains("x"), "{err}");
    }
}
