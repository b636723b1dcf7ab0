//! The cells of a protocol grid (methods × datasets × shots × seeds), in the one order that
//! `--cell N` and the Slurm array's task ids index.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use mocoop_data::{BENCHMARK, DOMAIN_TARGETS};
use mocoop_train::config::{Method, Setting};

use super::ProtocolName;

/// What a grid spans, defaults filled in.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Which protocol.
    pub protocol: ProtocolName,
    /// The methods, in the order the tables list them.
    pub methods: Vec<Method>,
    /// Training datasets.
    pub datasets: Vec<String>,
    /// Shots.
    pub shots: Vec<usize>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Evaluation targets of the transfer protocols (empty otherwise).
    pub targets: Vec<String>,
}

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its place in [`Grid::cells`].
    pub index: usize,
    /// The method.
    pub method: Method,
    /// The training dataset.
    pub dataset: String,
    /// Images per class.
    pub shots: usize,
    /// The seed.
    pub seed: u64,
}

impl Cell {
    /// How progress lines and listings name it.
    pub fn label(&self) -> String {
        format!(
            "{} {} shots {} seed {}",
            self.method, self.dataset, self.shots, self.seed
        )
    }

    /// Its run directory: `OUT/<method>/<dataset>/shots<k>-seed<s>/`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join(self.method.to_string())
            .join(&self.dataset)
            .join(format!("shots{}-seed{}", self.shots, self.seed))
    }

    /// Its name among the claims (`OUT/claims/`).
    pub fn claim_name(&self) -> String {
        format!(
            "{}.{}.shots{}-seed{}",
            self.method, self.dataset, self.shots, self.seed
        )
    }
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

/// `given`, or `default` when nothing was given.
fn or_default<T: Clone>(given: &[T], default: impl FnOnce() -> Vec<T>) -> Vec<T> {
    if given.is_empty() {
        default()
    } else {
        given.to_vec()
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Grid {
    /// The grid of the given lists, each defaulting to the protocol's (the 11 datasets, or ImageNet
    /// for the transfer protocols; shots 1–16 for few-shot, 16 otherwise; their targets).
    pub fn new(
        protocol: ProtocolName,
        methods: Vec<Method>,
        datasets: &[String],
        shots: &[usize],
        seeds: &[u64],
        targets: &[String],
    ) -> Result<Self> {
        let transfer = matches!(protocol, ProtocolName::Domain | ProtocolName::CrossDataset);
        let grid = Self {
            protocol,
            methods,
            datasets: or_default(datasets, || match transfer {
                true => vec!["imagenet".into()],
                false => names(&BENCHMARK),
            }),
            shots: or_default(shots, || match protocol {
                ProtocolName::Fewshot => vec![1, 2, 4, 8, 16],
                _ => vec![16],
            }),
            seeds: seeds.to_vec(),
            targets: or_default(targets, || match protocol {
                ProtocolName::Domain => names(&DOMAIN_TARGETS),
                ProtocolName::CrossDataset => names(&BENCHMARK[1..]),
                _ => Vec::new(),
            }),
        };
        if grid.seeds.is_empty() {
            bail!("--seeds is empty");
        }
        refuse_repeats("--methods", &grid.methods)?;
        refuse_repeats("--datasets", &grid.datasets)?;
        refuse_repeats("--shots", &grid.shots)?;
        refuse_repeats("--seeds", &grid.seeds)?;
        Ok(grid)
    }

    /// Base classes for base-to-new, all classes otherwise.
    pub fn setting(&self) -> Setting {
        match self.protocol {
            ProtocolName::Base2new => Setting::Base2new,
            _ => Setting::Fewshot,
        }
    }

    /// Every cell: method by method, then dataset, shots and seed.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &method in &self.methods {
            for dataset in &self.datasets {
                for &shots in &self.shots {
                    for &seed in &self.seeds {
                        cells.push(Cell {
                            index: cells.len(),
                            method,
                            dataset: dataset.clone(),
                            shots,
                            seed,
                        });
                    }
                }
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_run_method_by_method_and_repeats_are_refused() {
        let grid = Grid::new(
            ProtocolName::Base2new,
            vec![Method::Coop, Method::Mocoop],
            &["dtd".into()],
            &[],
            &[1, 2],
            &[],
        )
        .unwrap();
        let cells = grid.cells();
        let labels: Vec<String> = cells.iter().map(Cell::label).collect();
        assert_eq!(
            labels,
            [
                "coop dtd shots 16 seed 1",
                "coop dtd shots 16 seed 2",
                "mocoop dtd shots 16 seed 1",
                "mocoop dtd shots 16 seed 2",
            ]
        );
        assert_eq!(cells[3].index, 3);
        assert_eq!(
            cells[3].dir(Path::new("out")),
            Path::new("out/mocoop/dtd/shots16-seed2")
        );
        assert_eq!(cells[3].claim_name(), "mocoop.dtd.shots16-seed2");
        let twice = Grid::new(
            ProtocolName::Fewshot,
            vec![Method::Coop, Method::Coop],
            &[],
            &[],
            &[1],
            &[],
        );
        assert!(
            twice
                .unwrap_err()
                .to_string()
                .contains("--methods lists coop twice")
        );
        let domain = Grid::new(
            ProtocolName::Domain,
            vec![Method::Coop],
            &[],
            &[],
            &[1],
            &[],
        );
        let domain = domain.unwrap();
        assert_eq!(domain.datasets, ["imagenet"]);
        assert_eq!(domain.targets.len(), DOMAIN_TARGETS.len());
    }
}
