//! Few-shot subsets: `k` images per class from train and `min(k, 4)` from val, drawn with a seed
//! and saved as `split_fewshot/shot_{k}-seed_{seed}.json` under the dataset folder, so that every
//! method and every run with the same `(k, seed)` trains on the same images.
//!
//! The draw uses this crate's own generator (rand's `StdRng` seeded with `seed`), not Python's
//! `random`, so the images differ from those in CoOp's pickles for the same seed; the saved file is
//! what makes runs comparable. Delete it to draw again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Item};
use crate::error::{DataError, Result};
use crate::files::read_json;
use crate::split_file::SplitEntry;
use mocoop_model::atomic::write_atomic;

/// Identifies the sampling algorithm in the saved files.
const SAMPLER: &str = "mocoop-data 1: per label in label order, rand StdRng seeded with the seed, k without replacement, kept in dataset order";

/// The JSON saved for one `(k, seed)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FewShotFile {
    /// Dataset name.
    pub dataset: String,
    /// Images per class drawn from train.
    pub shots: usize,
    /// The seed.
    pub seed: u64,
    /// How the subset was drawn.
    pub sampler: String,
    /// `[path relative to the dataset folder, label, classname]` per training image.
    pub train: Vec<SplitEntry>,
    /// The same for validation images (empty when val is the test set, as for ImageNet).
    pub val: Vec<SplitEntry>,
}

/// A dataset reduced to its few-shot subset, and where the subset is stored.
#[derive(Debug, Clone)]
pub struct FewShot {
    /// The dataset with `train` (and `val`) replaced by the subset; test is unchanged.
    pub dataset: Dataset,
    /// The JSON file holding the subset.
    pub file: PathBuf,
    /// True when the file existed and was reused rather than drawn now.
    pub reused: bool,
    /// Something the user should be told, e.g. that the dataset folder was read-only and the
    /// subset went to the cache folder instead.
    pub note: Option<String>,
}

/// Draws up to `shots` items per label (all of a class's items when it has fewer), label by label
/// in label order, keeping the drawn items in their dataset order. Deterministic given `rng`.
pub fn sample_per_class(items: &[Item], shots: usize, rng: &mut StdRng) -> Vec<Item> {
    let mut by_label: BTreeMap<usize, Vec<&Item>> = BTreeMap::new();
    for item in items {
        by_label.entry(item.label).or_default().push(item);
    }
    let mut out = Vec::new();
    for group in by_label.values() {
        if group.len() <= shots {
            out.extend(group.iter().map(|i| (*i).clone()));
        } else {
            let mut picked = rand::seq::index::sample(rng, group.len(), shots).into_vec();
            picked.sort_unstable();
            out.extend(picked.into_iter().map(|i| group[i].clone()));
        }
    }
    out
}

/// The folder used when the dataset folder is not writable: `$MOCOOP_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/mocoop`, else `~/.cache/mocoop`, else the system temp folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOCOOP_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("mocoop");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("mocoop");
    }
    std::env::temp_dir().join("mocoop")
}

/// Short stable hash of a path (FNV-1a), to keep copies of a dataset apart in the cache folder.
fn path_hash(path: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.to_string_lossy().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn file_name(shots: usize, seed: u64) -> String {
    format!("shot_{shots}-seed_{seed}.json")
}

/// Where the subset lives under the dataset folder.
pub fn fewshot_path(dataset: &Dataset, shots: usize, seed: u64) -> PathBuf {
    dataset
        .dir
        .join("split_fewshot")
        .join(file_name(shots, seed))
}

fn fallback_path(dataset: &Dataset, shots: usize, seed: u64, cache_dir: &Path) -> PathBuf {
    let dir = std::path::absolute(&dataset.dir).unwrap_or_else(|_| dataset.dir.clone());
    cache_dir
        .join("split_fewshot")
        .join(format!("{}-{}", dataset.name, path_hash(&dir)))
        .join(file_name(shots, seed))
}

fn relative(dataset: &Dataset, path: &Path) -> String {
    let rel = path.strip_prefix(&dataset.dir).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn entries(dataset: &Dataset, items: &[Item]) -> Vec<SplitEntry> {
    items
        .iter()
        .map(|i| (relative(dataset, &i.path), i.label, i.classname.clone()))
        .collect()
}

/// Maps saved entries back onto the dataset's items; an entry that no longer matches the dataset
/// (image gone from the split, label changed) is an error naming the file.
fn resolve(
    dataset: &Dataset,
    file: &Path,
    split: &str,
    pool: &[Item],
    entries: &[SplitEntry],
) -> Result<Vec<Item>> {
    let by_path: HashMap<String, &Item> = pool
        .iter()
        .map(|i| (relative(dataset, &i.path), i))
        .collect();
    entries
        .iter()
        .map(|(path, label, _)| match by_path.get(path) {
            Some(item) if item.label == *label => Ok((*item).clone()),
            Some(item) => Err(DataError::Inconsistent {
                dataset: dataset.name.clone(),
                path: file.to_path_buf(),
                message: format!(
                    "{path} has label {label} here but {} in the {split} split; delete the file to draw again",
                    item.label
                ),
            }),
            None => Err(DataError::Inconsistent {
                dataset: dataset.name.clone(),
                path: file.to_path_buf(),
                message: format!(
                    "{path} is not in the dataset's {split} split; delete the file to draw again"
                ),
            }),
        })
        .collect()
}

fn apply(dataset: &Dataset, file: &Path, saved: &FewShotFile) -> Result<Dataset> {
    let mut out = dataset.clone();
    out.train = resolve(dataset, file, "train", &dataset.train, &saved.train)?;
    if !dataset.val_is_test {
        out.val = resolve(dataset, file, "val", &dataset.val, &saved.val)?;
    }
    Ok(out)
}

/// [`few_shot_with_cache`] with [`default_cache_dir`] as the fallback folder.
pub fn few_shot(dataset: &Dataset, shots: usize, seed: u64) -> Result<FewShot> {
    few_shot_with_cache(dataset, shots, seed, &default_cache_dir())
}

/// Reduces `dataset` to `shots` images per class from train and `min(shots, 4)` from val (val is
/// left alone when it is the test set). The subset is read from
/// `<dataset dir>/split_fewshot/shot_{shots}-seed_{seed}.json` (or its copy under `cache_dir`) when
/// present; otherwise it is drawn and saved there atomically, under `cache_dir` when the dataset
/// folder cannot be written ([`FewShot::note`] says so). `shots == 0` means all images.
pub fn few_shot_with_cache(
    dataset: &Dataset,
    shots: usize,
    seed: u64,
    cache_dir: &Path,
) -> Result<FewShot> {
    let primary = fewshot_path(dataset, shots, seed);
    if shots == 0 {
        return Ok(FewShot {
            dataset: dataset.clone(),
            file: primary,
            reused: false,
            note: None,
        });
    }
    let fallback = fallback_path(dataset, shots, seed, cache_dir);
    for (file, from_cache) in [(&primary, false), (&fallback, true)] {
        if file.is_file() {
            let saved: FewShotFile = read_json(&dataset.name, file, "few-shot file")?;
            if saved.shots != shots || saved.seed != seed {
                return Err(DataError::Inconsistent {
                    dataset: dataset.name.clone(),
                    path: file.clone(),
                    message: format!(
                        "holds shots={} seed={}, expected shots={shots} seed={seed}",
                        saved.shots, saved.seed
                    ),
                });
            }
            return Ok(FewShot {
                dataset: apply(dataset, file, &saved)?,
                file: file.clone(),
                reused: true,
                note: from_cache.then(|| {
                    format!(
                        "using the few-shot subset saved in the cache folder: {}",
                        file.display()
                    )
                }),
            });
        }
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = dataset.clone();
    out.train = sample_per_class(&dataset.train, shots, &mut rng);
    if !dataset.val_is_test {
        out.val = sample_per_class(&dataset.val, shots.min(4), &mut rng);
    }
    let saved = FewShotFile {
        dataset: dataset.name.clone(),
        shots,
        seed,
        sampler: SAMPLER.to_string(),
        train: entries(dataset, &out.train),
        val: if dataset.val_is_test {
            Vec::new()
        } else {
            entries(dataset, &out.val)
        },
    };
    let json = serde_json::to_vec_pretty(&saved).expect("few-shot file serialises");
    let (file, note) = match write_atomic(&primary, &json) {
        Ok(()) => (primary, None),
        Err(primary_error) => {
            write_atomic(&fallback, &json)
                .map_err(|e| DataError::io(&dataset.name, &fallback, e))?;
            let note = format!(
                "cannot write {} ({primary_error}); the few-shot subset was saved to {} instead",
                primary.display(),
                fallback.display()
            );
            (fallback, Some(note))
        }
    };
    Ok(FewShot {
        dataset: out,
        file,
        reused: false,
        note,
    })
}
