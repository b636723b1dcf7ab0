//! `mocoop protocol --collect`: the tables of a grid whose cells were run elsewhere (a Slurm job
//! array, other processes), once every cell is finished; otherwise the list of what is missing,
//! each with its state and its log.

use anyhow::{Result, bail};

use super::ProtocolArgs;
use super::cell::Cells;
use super::claim::{Claims, Held};
use super::grid::Cell;

/// What a cell that is not finished is doing.
fn state(claims: &Claims, cell: &Cell) -> String {
    let name = cell.claim_name();
    let holder = |held: &Held| {
        format!(
            "{} pid {}, heartbeat {}s ago",
            held.by.host,
            held.by.pid,
            held.age.as_secs()
        )
    };
    match (claims.holder(&name), claims.failure(&name)) {
        (Some(held), _) if claims.is_stale(&held) => {
            format!(
                "its claimer died ({}); the next run takes it over",
                holder(&held)
            )
        }
        (Some(held), _) => format!("running ({})", holder(&held)),
        (None, Some(failure)) => format!(
            "failed on {} (pid {}): {}",
            failure.host, failure.pid, failure.error
        ),
        (None, None) => "not started, or stopped".to_string(),
    }
}

/// Writes the tables if every cell is finished; else lists the others and fails.
pub fn collect(args: &ProtocolArgs) -> Result<()> {
    let grid = args.grid()?;
    let cells = Cells { args, grid: &grid };
    let claims = Claims::new(&args.out, args.stale_after()?)?;
    let all = grid.cells();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for cell in &all {
        match cells.finished(cell)? {
            Some(r) => results.push(r),
            None => {
                let log = super::slurm::log_path(&args.out, cell.index);
                let log = match log.is_file() {
                    true => format!("log {}", log.display()),
                    false => "no Slurm log".to_string(),
                };
                let (n, label) = (cell.index, cell.label());
                missing.push(format!(
                    "  cell {n}, {label}: {}; {log}",
                    state(&claims, cell)
                ));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} of {} cells are not finished:\n{}",
            missing.len(),
            all.len(),
            missing.join("\n")
        );
    }
    super::tables::write(&cells, &results)
}
