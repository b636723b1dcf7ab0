//! `mocoop data check`: verifies a dataset on disk and says what is wrong in one readable report —
//! counts per split and per class, files that are missing or cannot be decoded (all listed), and
//! the layout errors that stop the dataset from being read at all.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Split};
use crate::error::DataError;
use crate::registry::{dataset_info, read_dataset};

/// How thoroughly images are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeCheck {
    /// Only that each file exists.
    Exists,
    /// That each file exists and has a readable image header (format and size): catches empty,
    /// non-image and header-truncated files quickly.
    Header,
    /// That each file decodes completely (slow on large datasets).
    Full,
}

/// Options of [`check_dataset_with`].
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// How thoroughly to check images.
    pub decode: DecodeCheck,
    /// Threads checking images.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            decode: DecodeCheck::Header,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Image counts of one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCounts {
    /// The split.
    pub split: Split,
    /// Images in it.
    pub total: usize,
    /// Images per label.
    pub per_class: Vec<usize>,
}

/// A file that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (for missing files: which list names it).
    pub message: String,
}

/// The outcome of a check; [`fmt::Display`] prints it for people.
#[derive(Debug)]
pub struct Report {
    /// Dataset name.
    pub dataset: String,
    /// The root given.
    pub root: PathBuf,
    /// The dataset's folder, when found.
    pub dir: Option<PathBuf>,
    /// Why the dataset could not be read at all, if it could not.
    pub error: Option<DataError>,
    /// Class names by label.
    pub classnames: Vec<String>,
    /// The class count the dataset should have, where fixed.
    pub expected_classes: Option<usize>,
    /// Counts per split.
    pub splits: Vec<SplitCounts>,
    /// Files named by the split/list files that do not exist.
    pub missing: Vec<FileProblem>,
    /// Files that exist but cannot be read as images.
    pub undecodable: Vec<FileProblem>,
    /// Distinct image files checked.
    pub checked: usize,
    /// How they were checked.
    pub decode: DecodeCheck,
}

impl Report {
    /// True when the dataset was read and every image passed.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.missing.is_empty() && self.undecodable.is_empty()
    }

    /// Things that do not stop training but deserve a look.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.error.is_some() {
            return out;
        }
        if let Some(expected) = self.expected_classes
            && expected != self.classnames.len()
        {
            out.push(format!(
                "{} classes found, the full dataset has {expected}",
                self.classnames.len()
            ));
        }
        for counts in &self.splits {
            if counts.total == 0 {
                continue;
            }
            let empty: Vec<String> = counts
                .per_class
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == 0)
                .map(|(label, _)| label.to_string())
                .collect();
            if !empty.is_empty() {
                out.push(format!(
                    "{}: no image for label(s) {}",
                    counts.split.as_str(),
                    empty.join(", ")
                ));
            }
        }
        if let Some(train) = self.splits.iter().find(|c| c.split == Split::Train) {
            let few = train
                .per_class
                .iter()
                .filter(|n| **n > 0 && **n < 16)
                .count();
            if few > 0 {
                out.push(format!(
                    "train: {few} class(es) have fewer than 16 images; 16-shot subsets take all of them"
                ));
            }
        }
        out
    }
}

fn check_header(path: &Path) -> Result<(), String> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err("empty file".into());
    }
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a recognised image format".into());
    }
    reader
        .into_dimensions()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks each path; returns `(index, problem)` for the bad ones, `true` meaning missing.
fn check_files(paths: &[&Path], options: &CheckOptions) -> Vec<(usize, bool, String)> {
    let threads = options.threads.max(1).min(paths.len().max(1));
    let chunk = paths.len().div_ceil(threads).max(1);
    let check = |path: &Path| -> Option<(bool, String)> {
        if !path.is_file() {
            return Some((true, String::new()));
        }
        let result = match options.decode {
            DecodeCheck::Exists => Ok(()),
            DecodeCheck::Header => check_header(path),
            DecodeCheck::Full => mocoop_model::preprocess::load_rgb(path)
                .map(|_| ())
                .map_err(|e| e.message),
        };
        result.err().map(|m| (false, m))
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            check(p).map(|(missing, m)| (c * chunk + i, missing, m))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("check thread panicked"))
            .collect()
    })
}

fn counts(dataset: &Dataset) -> Vec<SplitCounts> {
    Split::ALL
        .iter()
        .map(|&split| {
            let items = dataset.split(split);
            let mut per_class = vec![0; dataset.num_classes()];
            for item in items {
                if let Some(n) = per_class.get_mut(item.label) {
                    *n += 1;
                }
            }
            SplitCounts {
                split,
                total: items.len(),
                per_class,
            }
        })
        .collect()
}

/// [`check_dataset_with`] with default options (header check on all cores).
pub fn check_dataset(name: &str, root: &Path) -> Report {
    check_dataset_with(name, root, &CheckOptions::default())
}

/// Reads dataset `name` from `root` and checks every image it names.
pub fn check_dataset_with(name: &str, root: &Path, options: &CheckOptions) -> Report {
    let mut report = Report {
        dataset: name.to_string(),
        root: root.to_path_buf(),
        dir: None,
        error: None,
        classnames: Vec::new(),
        expected_classes: None,
        splits: Vec::new(),
        missing: Vec::new(),
        undecodable: Vec::new(),
        checked: 0,
        decode: options.decode,
    };
    let info = match dataset_info(name) {
        Ok(info) => info,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.expected_classes = info.classes;
    let (dataset, sources) = match read_dataset(name, root) {
        Ok(x) => x,
        Err(e) => {
            report.dir = info.resolve_dir(root).ok();
            report.error = Some(e);
            return report;
        }
    };
    report.dir = Some(dataset.dir.clone());
    report.splits = counts(&dataset);
    report.classnames = dataset.classnames.clone();

    // Each distinct file once, remembering the first split that names it.
    let mut seen = std::collections::HashSet::new();
    let mut files: Vec<(&Path, usize)> = Vec::new();
    for (s, split) in Split::ALL.iter().enumerate() {
        for item in dataset.split(*split) {
            if seen.insert(item.path.as_path()) {
                files.push((item.path.as_path(), s));
            }
        }
    }
    report.checked = files.len();
    let paths: Vec<&Path> = files.iter().map(|f| f.0).collect();
    for (i, missing, message) in check_files(&paths, options) {
        let (path, split) = files[i];
        if missing {
            let listed_in = match &sources {
                Some(sources) => format!("listed in {}", sources[split].display()),
                None => "found by listing its folder, then gone".to_string(),
            };
            report.missing.push(FileProblem {
                path: path.to_path_buf(),
                message: listed_in,
            });
        } else {
            report.undecodable.push(FileProblem {
                path: path.to_path_buf(),
                message,
            });
        }
    }
    report
}

/// At most this many files of each kind are printed; the report keeps them all.
const LIST_LIMIT: usize = 200;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = dataset_info(&self.dataset).map(|i| i.title).unwrap_or("?");
        writeln!(f, "Dataset {} ({title})", self.dataset)?;
        match &self.dir {
            Some(dir) => writeln!(f, "Folder:  {}", dir.display())?,
            None => writeln!(f, "Root:    {}", self.root.display())?,
        }
        if let Some(error) = &self.error {
            writeln!(f)?;
            writeln!(f, "Cannot read the dataset:")?;
            writeln!(f, "  {error}")?;
            writeln!(f)?;
            return write!(f, "Result: FAILED");
        }
        match self.expected_classes {
            Some(n) => writeln!(f, "Classes: {} (full dataset: {n})", self.classnames.len())?,
            None => writeln!(f, "Classes: {}", self.classnames.len())?,
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<6} {:>9} {:>8} {:>10} {:>10}",
            "split", "images", "classes", "min/class", "max/class"
        )?;
        for c in &self.splits {
            let present = c.per_class.iter().filter(|n| **n > 0).count();
            let min = c.per_class.iter().min().copied().unwrap_or(0);
            let max = c.per_class.iter().max().copied().unwrap_or(0);
            writeln!(
                f,
                "{:<6} {:>9} {:>8} {:>10} {:>10}",
                c.split.as_str(),
                c.total,
                present,
                min,
                max
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Per class:")?;
        write!(f, "{:>6}", "label")?;
        for c in &self.splits {
            write!(f, " {:>7}", c.split.as_str())?;
        }
        writeln!(f, "  name")?;
        for (label, name) in self.classnames.iter().enumerate() {
            write!(f, "{label:>6}")?;
            for c in &self.splits {
                write!(f, " {:>7}", c.per_class.get(label).copied().unwrap_or(0))?;
            }
            writeln!(f, "  {name}")?;
        }
        writeln!(f)?;
        let how = match self.decode {
            DecodeCheck::Exists => "existence",
            DecodeCheck::Header => "existence and image header",
            DecodeCheck::Full => "full decode",
        };
        writeln!(f, "Images checked: {} ({how})", self.checked)?;
        for (label, list) in [
            ("Missing files", &self.missing),
            ("Undecodable files", &self.undecodable),
        ] {
            writeln!(f, "{label}: {}", list.len())?;
            for p in list.iter().take(LIST_LIMIT) {
                writeln!(f, "  {}: {}", p.path.display(), p.message)?;
            }
            if list.len() > LIST_LIMIT {
                writeln!(f, "  … and {} more", list.len() - LIST_LIMIT)?;
            }
        }
        let warnings = self.warnings();
        if !warnings.is_empty() {
            writeln!(f, "Warnings:")?;
            for w in warnings {
                writeln!(f, "  - {w}")?;
            }
        }
        writeln!(f)?;
        if self.is_ok() {
            write!(f, "Result: OK")
        } else {
            write!(
                f,
                "Result: FAILED ({} missing, {} undecodable)",
                self.missing.len(),
                self.undecodable.len()
            )
        }
    }
}
