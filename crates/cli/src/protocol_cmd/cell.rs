//! One cell of the grid: its configuration, whether it is finished, and training and evaluating
//! it (a finished run with the same configuration is reused, an unfinished one resumed from its
//! last checkpoint, any other refused).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use mocoop_train::config::TrainConfig;
use mocoop_train::protocol::CellResult;
use mocoop_train::run::{self, RunResults};
use mocoop_train::{EvalSplit, EvalTarget, TrainedRun, evaluate_run, resume, train};

use super::ProtocolArgs;
use super::grid::{Cell, Grid};
use crate::grid_progress::GridProgress;
use crate::model_args::LoadedClip;
use crate::train_cmd::RunData;

/// What every cell of one invocation shares.
pub struct Cells<'a> {
    /// The command line.
    pub args: &'a ProtocolArgs,
    /// The grid it spans.
    pub grid: &'a Grid,
}

/// The results of a finished run with exactly `config`, if there is one.
fn reusable(dir: &Path, config: &TrainConfig) -> Result<Option<RunResults>> {
    let results = dir.join(run::RESULTS_FILE);
    if !results.is_file() {
        return Ok(None);
    }
    let existing = run::read_config(dir, None)?;
    if &existing != config {
        bail!(
            "{} holds a finished run with another configuration; remove it or choose another --out",
            dir.display()
        );
    }
    read_results(&results).map(Some)
}

fn read_results(file: &Path) -> Result<RunResults> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    serde_json::from_str(&text).with_context(|| file.display().to_string())
}

/// Whether `dir` holds an unfinished run of exactly `config` (which `resume` continues).
fn unfinished(dir: &Path, config: &TrainConfig) -> bool {
    run::read_config(dir, None).is_ok_and(|existing| &existing == config)
}

/// Where a transfer target's evaluation of the run in `dir` is kept.
fn target_file(dir: &Path, target: &str) -> PathBuf {
    dir.join(format!("eval-{target}-all.json"))
}

impl Cells<'_> {
    /// The run configuration of `cell`: the flags, with the cell's method, dataset, shots, seed.
    pub fn config(&self, cell: &Cell) -> Result<TrainConfig> {
        let mut flags = self.args.flags.clone();
        flags.method = cell.method;
        let run = RunData {
            dataset: cell.dataset.clone(),
            root: self.args.root.clone(),
            setting: self.grid.setting(),
            shots: cell.shots,
            seed: cell.seed,
        };
        flags.config(&self.args.checkpoint, &run)
    }

    fn result(&self, cell: &Cell, target: Option<&str>, results: RunResults) -> CellResult {
        CellResult {
            dataset: cell.dataset.clone(),
            seed: cell.seed,
            shots: cell.shots,
            target: target.map(str::to_string),
            results,
        }
    }

    /// The cell's results when it is finished: trained, evaluated, and evaluated on every target.
    pub fn finished(&self, cell: &Cell) -> Result<Option<Vec<CellResult>>> {
        let dir = cell.dir(&self.args.out);
        let Some(results) = reusable(&dir, &self.config(cell)?)? else {
            return Ok(None);
        };
        let mut out = vec![self.result(cell, None, results)];
        for target in &self.grid.targets {
            let file = target_file(&dir, target);
            if !file.is_file() {
                return Ok(None);
            }
            out.push(self.result(cell, Some(target), read_results(&file)?));
        }
        Ok(Some(out))
    }

    /// Trains (or resumes, or reuses) the cell and evaluates it on every target.
    pub fn run<B: AutodiffBackend>(
        &self,
        cell: &Cell,
        loaded: &LoadedClip<B>,
        devices: &[B::Device],
        progress: &GridProgress,
    ) -> Result<Vec<CellResult>> {
        let dir = cell.dir(&self.args.out);
        let config = self.config(cell)?;
        let results = match reusable(&dir, &config)? {
            Some(results) => results,
            None => self.train(&dir, config, loaded, devices, progress)?,
        };
        let mut out = vec![self.result(cell, None, results)];
        let mut trained = None;
        for target in &self.grid.targets {
            let file = target_file(&dir, target);
            let results = if file.is_file() {
                read_results(&file)?
            } else {
                if trained.is_none() {
                    let clip = loaded.clip.valid();
                    let method = Some(cell.method);
                    let run = TrainedRun::load(&dir, clip, &loaded.tokenizer, method, &devices[0])?;
                    trained = Some(run);
                }
                let run = trained.as_ref().expect("loaded");
                let results = self.evaluate(run, &loaded.tokenizer, target, &devices[0]);
                let results =
                    results.with_context(|| format!("evaluating {} on {target}", dir.display()))?;
                run::write_json(&file, &results)?;
                results
            };
            progress.say(&format!(
                "    {target}: {:.2}%",
                results.splits.first().map_or(f64::NAN, |s| s.accuracy)
            ));
            out.push(self.result(cell, Some(target), results));
        }
        Ok(out)
    }

    fn train<B: AutodiffBackend>(
        &self,
        dir: &Path,
        config: TrainConfig,
        loaded: &LoadedClip<B>,
        devices: &[B::Device],
        progress: &GridProgress,
    ) -> Result<RunResults> {
        let mut options = self.args.flags.options(true);
        options.evaluate = true;
        options.stop = Some(crate::interrupt::stop_flag());
        options.progress = Some(progress.bars());
        let (clip, tokenizer) = (loaded.clip.clone(), &loaded.tokenizer);
        let report = if unfinished(dir, &config) {
            resume(dir, clip, tokenizer, &options, devices)
        } else {
            train(config, clip, tokenizer, dir, &options, devices)
        }
        .with_context(|| format!("training {}", dir.display()))?;
        Ok(report.results.expect("evaluated"))
    }

    fn evaluate<B: burn::tensor::backend::Backend>(
        &self,
        run: &TrainedRun<B>,
        tokenizer: &mocoop_model::tokenizer::ClipTokenizer,
        target: &str,
        device: &B::Device,
    ) -> Result<RunResults> {
        let eval_target = EvalTarget {
            dataset: Some((target.to_string(), self.args.root.clone())),
            split: Some(EvalSplit::All),
            batch_size: self.args.flags.eval_batch_size(),
            workers: self.args.flags.workers(),
        };
        Ok(evaluate_run(run, tokenizer, &eval_target, device)?)
    }
}
