//! The results of a finished grid: `OUT/results-<protocol>-<method>.{md,json}` for each method,
//! `OUT/results-<protocol>.{md,json}` with every method in one table when there are several, and
//! the report (`crate::report::protocol`). The table is printed on stdout. Each file is written
//! atomically: several processes of one grid may write them at once.

use anyhow::Result;
use mocoop_model::atomic::write_atomic;
use mocoop_train::config::Method;
use mocoop_train::protocol::comparison::{comparison, comparison_markdown};
use mocoop_train::protocol::{
    CellResult, Table, base2new_table, fewshot_table, markdown, transfer_table,
};
use mocoop_train::run;
use serde_json::json;

use super::ProtocolName;
use super::cell::Cells;
use super::grid::Grid;

/// The protocol's table of one method's cells.
fn table(grid: &Grid, title: &str, cells: &[CellResult]) -> Table {
    match grid.protocol {
        ProtocolName::Base2new => base2new_table(title, cells),
        ProtocolName::Fewshot => fewshot_table(title, cells),
        ProtocolName::Domain | ProtocolName::CrossDataset => {
            transfer_table(title, cells, &grid.targets)
        }
    }
}

/// Writes the tables and the report of the grid from `results` (each cell's, in grid order).
pub fn write(cells: &Cells, results: &[Vec<CellResult>]) -> Result<()> {
    let (grid, out) = (cells.grid, &cells.args.out);
    let name = grid.protocol.name();
    std::fs::create_dir_all(out)?;
    let mut tables: Vec<(String, Table)> = Vec::new();
    for &method in &grid.methods {
        let mine: Vec<CellResult> = grid
            .cells()
            .iter()
            .zip(results)
            .filter(|(cell, _)| cell.method == method)
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        let table = table(grid, &format!("{name} — {method}"), &mine);
        write_method(out, name, method, &mine, &table)?;
        tables.push((method.to_string(), table));
    }
    let printed = match tables.as_slice() {
        [(_, only)] => markdown(only),
        _ => {
            let all = comparison(name, &tables).map_err(anyhow::Error::msg)?;
            let md = comparison_markdown(&all);
            let stem = out.join(format!("results-{name}"));
            write_atomic(&stem.with_extension("md"), md.as_bytes())?;
            let json = json!({"protocol": name, "methods": grid.methods, "table": all});
            run::write_json(&stem.with_extension("json"), &json)?;
            md
        }
    };
    let report = crate::report::protocol::write(out, name)?;
    eprintln!("report: {}", report.display());
    println!("{printed}");
    Ok(())
}

/// `results-<protocol>-<method>.{md,json}`: the method's table and cells.
fn write_method(
    out: &std::path::Path,
    name: &str,
    method: Method,
    cells: &[CellResult],
    table: &Table,
) -> Result<()> {
    let stem = format!("results-{name}-{method}");
    write_atomic(&out.join(format!("{stem}.md")), markdown(table).as_bytes())?;
    let json = json!({
        "protocol": name,
        "method": method,
        "cells": cells,
        "table": table,
    });
    run::write_json(&out.join(format!("{stem}.json")), &json)?;
    Ok(())
}
