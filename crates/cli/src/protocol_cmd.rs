//! `mocoop protocol`: runs a whole evaluation grid of the CoOp family (datasets × shots × seeds),
//! resuming where it stopped, and writes the results table as Markdown and JSON, and the report
//! of every method run in the same folder (`crate::report::protocol`).
//!
//! Runs go to `OUT/<method>/<dataset>/shots<k>-seed<s>/` (ordinary run directories); a run whose
//! `results.json` exists with the same configuration is reused, an unfinished one with the same
//! configuration is resumed from its last checkpoint, any other is redone. Each cell is one
//! directory, so a seed is never counted twice; a list naming a dataset, shot count or seed twice is
//! refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use mocoop_data::{BENCHMARK, DOMAIN_TARGETS};
use mocoop_train::config::{Setting, TrainConfig};
use mocoop_train::protocol::{CellResult, base2new_table, fewshot_table, markdown, transfer_table};
use mocoop_train::run::{self, RunResults};
use mocoop_train::{EvalSplit, EvalTarget, TrainedRun, evaluate_run, resume, train};

use crate::device::{DeviceList, OnDevices};
use crate::grid_progress::GridProgress;
use crate::model_args::CheckpointArgs;
use crate::train_cmd::{RunData, TrainFlags};

/// Which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolName {
    /// Train on base classes (16 shots), test on base and new; Base / New / HM.
    Base2new,
    /// All classes, accuracy per number of shots (1, 2, 4, 8, 16).
    Fewshot,
    /// Train on ImageNet (16 shots), test on ImageNet-V2, -Sketch, -A and -R.
    Domain,
    /// Train on ImageNet (16 shots), test on the other 10 datasets.
    CrossDataset,
}

/// Runs a protocol grid and writes its results table.
#[derive(Debug, clap::Args)]
pub struct ProtocolArgs {
    /// base2new, fewshot, domain or cross-dataset.
    #[arg(value_enum)]
    protocol: ProtocolName,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N; or several of one kind,
    /// comma-separated (cuda:0,cuda:1), to split every training batch across them (data
    /// parallel; evaluation runs on the first).
    #[arg(long, default_value = "cpu", value_name = "DEVICE[,DEVICE…]")]
    device: DeviceList,
    /// Data root holding every dataset's folder.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Training datasets, comma-separated (default: the 11 of the benchmark; ImageNet for the
    /// transfer protocols).
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Shots, comma-separated (default: 1,2,4,8,16 for fewshot, 16 otherwise).
    #[arg(long, value_delimiter = ',')]
    shots: Vec<usize>,
    /// Evaluation targets of the transfer protocols, comma-separated (default: the four ImageNet
    /// variants for domain, the other 10 datasets for cross-dataset).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Folder of the runs and the results table.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The method and its settings.
    #[command(flatten)]
    pub flags: TrainFlags,
}

impl ProtocolArgs {
    /// The devices the user asked for.
    pub fn devices(&self) -> &DeviceList {
        &self.device
    }

    fn name(&self) -> &'static str {
        match self.protocol {
            ProtocolName::Base2new => "base2new",
            ProtocolName::Fewshot => "fewshot",
            ProtocolName::Domain => "domain",
            ProtocolName::CrossDataset => "cross-dataset",
        }
    }
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
    let text = std::fs::read_to_string(&results)?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| results.display().to_string())?,
    ))
}

/// Whether `dir` holds an unfinished run of exactly `config` (which `resume` continues).
fn unfinished(dir: &Path, config: &TrainConfig) -> bool {
    run::read_config(dir, None).is_ok_and(|existing| &existing == config)
}

/// An error when `values` names something twice (a repeated seed would count twice in the means).
fn refuse_repeats<T: PartialEq + std::fmt::Display>(flag: &str, values: &[T]) -> Result<()> {
    for (i, value) in values.iter().enumerate() {
        if values[..i].contains(value) {
            bail!("{flag} lists {value} twice");
        }
    }
    Ok(())
}

impl OnDevices for ProtocolArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        let device = devices[0].clone();
        let transfer = matches!(
            self.protocol,
            ProtocolName::Domain | ProtocolName::CrossDataset
        );
        let datasets: Vec<String> = if !self.datasets.is_empty() {
            self.datasets.clone()
        } else if transfer {
            vec!["imagenet".into()]
        } else {
            BENCHMARK.iter().map(|s| s.to_string()).collect()
        };
        let shots: Vec<usize> = if !self.shots.is_empty() {
            self.shots.clone()
        } else if self.protocol == ProtocolName::Fewshot {
            vec![1, 2, 4, 8, 16]
        } else {
            vec![16]
        };
        let targets: Vec<String> = match (self.protocol, self.targets.is_empty()) {
            (_, false) => self.targets.clone(),
            (ProtocolName::Domain, true) => DOMAIN_TARGETS.iter().map(|s| s.to_string()).collect(),
            (ProtocolName::CrossDataset, true) => {
                BENCHMARK[1..].iter().map(|s| s.to_string()).collect()
            }
            _ => Vec::new(),
        };
        if self.seeds.is_empty() {
            bail!("--seeds is empty");
        }
        refuse_repeats("--datasets", &datasets)?;
        refuse_repeats("--shots", &shots)?;
        refuse_repeats("--seeds", &self.seeds)?;
        let setting = if self.protocol == ProtocolName::Base2new {
            Setting::Base2new
        } else {
            Setting::Fewshot
        };
        let method = self.flags.method;
        let checkpoint = self
            .flags
            .checkpoint_for(&self.checkpoint, self.device.main())?;
        let loaded = checkpoint.load::<B>(self.device.main(), &device)?;
        let total = datasets.len() * shots.len() * self.seeds.len();
        let mut progress = GridProgress::new(total);
        let mut cells = Vec::new();
        for dataset in &datasets {
            for &k in &shots {
                for &seed in &self.seeds {
                    let cell = format!("{dataset} shots {k} seed {seed}");
                    let dir = self
                        .out
                        .join(method.to_string())
                        .join(dataset)
                        .join(format!("shots{k}-seed{seed}"));
                    let run_data = RunData {
                        dataset: dataset.clone(),
                        root: self.root.clone(),
                        setting,
                        shots: k,
                        seed,
                    };
                    let config = self.flags.config(&checkpoint, &run_data)?;
                    let results = match reusable(&dir, &config)? {
                        Some(results) => {
                            progress.begin(&cell, false);
                            results
                        }
                        None => {
                            progress.begin(&cell, true);
                            let mut options = self.flags.options(true);
                            options.evaluate = true;
                            options.stop = Some(crate::interrupt::stop_flag());
                            options.progress = Some(progress.bars());
                            let (clip, tokenizer) = (loaded.clip.clone(), &loaded.tokenizer);
                            let report = if unfinished(&dir, &config) {
                                resume(&dir, clip, tokenizer, &options, &devices)
                            } else {
                                train(config, clip, tokenizer, &dir, &options, &devices)
                            }
                            .with_context(|| format!("training {}", dir.display()))?;
                            report.results.expect("evaluated")
                        }
                    };
                    cells.push(CellResult {
                        dataset: dataset.clone(),
                        seed,
                        shots: k,
                        target: None,
                        results,
                    });
                    if targets.is_empty() {
                        progress.end();
                        continue;
                    }
                    let mut trained = None;
                    for target in &targets {
                        let file = dir.join(format!("eval-{target}-all.json"));
                        let results: RunResults = if file.is_file() {
                            serde_json::from_str(&std::fs::read_to_string(&file)?)?
                        } else {
                            if trained.is_none() {
                                trained = Some(TrainedRun::load(
                                    &dir,
                                    loaded.clip.valid(),
                                    &loaded.tokenizer,
                                    Some(method),
                                    &device,
                                )?);
                            }
                            let eval_target = EvalTarget {
                                dataset: Some((target.clone(), self.root.clone())),
                                split: Some(EvalSplit::All),
                                batch_size: self.flags.eval_batch_size(),
                                workers: self.flags.workers(),
                            };
                            let run = trained.as_ref().expect("loaded");
                            let results =
                                evaluate_run(run, &loaded.tokenizer, &eval_target, &device)
                                    .with_context(|| {
                                        format!("evaluating {} on {target}", dir.display())
                                    })?;
                            run::write_json(&file, &results)?;
                            results
                        };
                        progress.say(&format!(
                            "    {target}: {:.2}%",
                            results.splits.first().map_or(f64::NAN, |s| s.accuracy)
                        ));
                        cells.push(CellResult {
                            dataset: dataset.clone(),
                            seed,
                            shots: k,
                            target: Some(target.clone()),
                            results,
                        });
                    }
                    progress.end();
                }
            }
        }
        progress.finish();
        let title = format!("{} — {method}", self.name());
        let table = match self.protocol {
            ProtocolName::Base2new => base2new_table(&title, &cells),
            ProtocolName::Fewshot => fewshot_table(&title, &cells),
            ProtocolName::Domain | ProtocolName::CrossDataset => {
                transfer_table(&title, &cells, &targets)
            }
        };
        let md = markdown(&table);
        std::fs::create_dir_all(&self.out)?;
        let stem = format!("results-{}-{method}", self.name());
        std::fs::write(self.out.join(format!("{stem}.md")), &md)?;
        let out = json!({
            "protocol": self.name(),
            "method": method,
            "cells": cells,
            "table": table,
        });
        run::write_json(&self.out.join(format!("{stem}.json")), &out)?;
        let report = crate::report::protocol::write(&self.out, self.name())?;
        eprintln!("report: {}", report.display());
        println!("{md}");
        Ok(())
    }
}
