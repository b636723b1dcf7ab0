//! Working through a grid that other processes may share: each cell is claimed before it trains
//! (`claim`); cells others hold are waited for, and taken over when their claimer dies.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use mocoop_train::TrainError;
use mocoop_train::protocol::CellResult;

use super::cell::Cells;
use super::claim::{Claim, Claims, Failure, Held};
use super::grid::Cell;
use crate::grid_progress::GridProgress;
use crate::model_args::LoadedClip;

/// What became of one try at a cell.
pub enum Outcome {
    /// Finished (now or before), with its results.
    Done(Vec<CellResult>),
    /// Another live process trains it.
    Held(Held),
    /// It failed while this process was running (in another process).
    Failed(Failure),
}

/// One process's share of the work.
pub struct Worker<'a, B: AutodiffBackend> {
    cells: &'a Cells<'a>,
    claims: Claims,
    devices: Vec<B::Device>,
    /// The CLIP, loaded when the first cell trains.
    loaded: Option<LoadedClip<B>>,
    progress: GridProgress,
    /// How long to wait between looks at cells that others hold.
    poll: Duration,
}

/// How a held cell is listed: `label (host pid N, heartbeat 3s ago)`.
pub fn describe_held(cell: &Cell, held: &Held) -> String {
    format!(
        "{} ({} pid {}, heartbeat {}s ago)",
        cell.label(),
        held.by.host,
        held.by.pid,
        held.age.as_secs()
    )
}

/// Whether `error` is the user's interruption (Ctrl-C, SIGTERM, `scancel`) of a training.
fn interrupted(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<TrainError>(),
        Some(TrainError::Interrupted { .. })
    )
}

impl<'a, B: AutodiffBackend> Worker<'a, B> {
    /// A worker on `devices` over the grid of `cells`.
    pub fn new(cells: &'a Cells<'a>, devices: Vec<B::Device>) -> Result<Self> {
        let stale_after = cells.args.stale_after()?;
        Ok(Self {
            cells,
            claims: Claims::new(&cells.args.out, stale_after)?,
            devices,
            loaded: None,
            progress: GridProgress::new(cells.grid.cells().len()),
            poll: stale_after / 4,
        })
    }

    /// Runs cell `n` if it is not finished and nobody else holds it; writes the tables when no
    /// cell is left.
    pub fn run_one(&mut self, n: usize) -> Result<()> {
        let all = self.cells.grid.cells();
        let Some(cell) = all.get(n) else {
            bail!(
                "--cell {n}: the grid has {} cells (0 to {})",
                all.len(),
                all.len().saturating_sub(1)
            );
        };
        match self.attempt(cell)? {
            Outcome::Done(_) => {}
            Outcome::Held(held) => {
                eprintln!(
                    "cell {n}, {}: another process trains it",
                    describe_held(cell, &held)
                );
                return Ok(());
            }
            Outcome::Failed(f) => bail!("cell {n}, {} failed: {}", cell.label(), f.error),
        }
        let finished: Option<Vec<_>> = all
            .iter()
            .map(|c| self.cells.finished(c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .collect();
        if let Some(results) = finished {
            super::tables::write(self.cells, &results)?;
        }
        Ok(())
    }

    /// Runs every cell nobody else holds, then waits for those others hold (taking over any
    /// whose claimer dies); the results of every cell, in grid order.
    pub fn run_all(&mut self) -> Result<Vec<Vec<CellResult>>> {
        let all = self.cells.grid.cells();
        let mut results: BTreeMap<usize, Vec<CellResult>> = BTreeMap::new();
        let mut failed: Vec<(Cell, Failure)> = Vec::new();
        let mut waiting_for = String::new();
        loop {
            let mut held = Vec::new();
            for cell in &all {
                if results.contains_key(&cell.index) || failed.iter().any(|(c, _)| c == cell) {
                    continue;
                }
                match self.attempt(cell)? {
                    Outcome::Done(r) => {
                        results.insert(cell.index, r);
                    }
                    Outcome::Held(h) => held.push(describe_held(cell, &h)),
                    Outcome::Failed(f) => failed.push((cell.clone(), f)),
                }
            }
            if held.is_empty() {
                break;
            }
            let note = held.join(", ");
            if note != waiting_for {
                self.progress
                    .say(&format!("waiting for cells other processes train: {note}"));
                waiting_for = note;
            }
            std::thread::sleep(self.poll);
        }
        self.progress.finish();
        if !failed.is_empty() {
            let list: Vec<String> = failed
                .iter()
                .map(|(c, f)| format!("{} ({} pid {}): {}", c.label(), f.host, f.pid, f.error))
                .collect();
            bail!(
                "{} cells failed in other processes: {}",
                list.len(),
                list.join("; ")
            );
        }
        Ok(results.into_values().collect())
    }

    /// Claims and runs `cell`, unless it is finished, held or failed meanwhile.
    fn attempt(&mut self, cell: &Cell) -> Result<Outcome> {
        if let Some(results) = self.cells.finished(cell)? {
            self.progress.begin(&cell.label(), false);
            self.progress.end();
            return Ok(Outcome::Done(results));
        }
        let name = cell.claim_name();
        if let Some(failure) = self.claims.failure(&name)
            && self.claims.failed_since_start(&failure)
        {
            return Ok(Outcome::Failed(failure));
        }
        let guard = match self
            .claims
            .try_claim(&name, crate::interrupt::stop_flag())?
        {
            Claim::Held(held) => return Ok(Outcome::Held(held)),
            Claim::Won(guard) => guard,
        };
        // Another process may have finished it between the look above and the claim.
        let finished = self.cells.finished(cell)?;
        let training = finished.is_none();
        self.progress.begin(&cell.label(), training);
        let outcome = match finished {
            Some(results) => Ok(results),
            None => self.train(cell),
        };
        match outcome {
            Ok(results) => {
                self.claims.clear(&name)?;
                drop(guard);
                self.progress.end();
                Ok(Outcome::Done(results))
            }
            Err(e) if guard.lost() => Err(e.context(format!(
                "{}: another process judged this one dead (its heartbeat was older than \
                 --stale-after) and took the cell over",
                cell.label()
            ))),
            Err(e) if interrupted(&e) => Err(e),
            Err(e) => {
                let log = super::slurm::own_log(&self.cells.args.out);
                self.claims.record_failure(&name, &format!("{e:#}"), log)?;
                Err(e)
            }
        }
    }

    fn train(&mut self, cell: &Cell) -> Result<Vec<CellResult>> {
        if self.loaded.is_none() {
            let args = self.cells.args;
            let loaded = args
                .checkpoint
                .load::<B>(args.device.main(), &self.devices[0])?;
            self.loaded = Some(loaded);
        }
        let loaded = self.loaded.as_ref().expect("loaded above");
        self.cells.run(cell, loaded, &self.devices, &self.progress)
    }
}
