//! The in-memory form of a dataset: image paths with labels and class names, split into train,
//! validation and test, as Dassl's `DatasetBase` holds them for the CoOp family.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// One labelled image. Mirrors Dassl's `Datum` so that split files translate one to one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Item {
    /// Absolute (root-joined) path of the image file.
    pub path: PathBuf,
    /// Class index, `0..classnames.len()`.
    pub label: usize,
    /// Class name as used in text prompts (see [`prompt_name`]).
    pub classname: String,
    /// Domain tag for data drawn from a shifted distribution (the ImageNet variants), else `None`.
    pub domain: Option<String>,
}

/// A dataset split three ways, with the class names indexed by label.
///
/// Besides the fields the reference code has, it keeps what later stages need and would otherwise
/// lose: the full class list after base/new subsampling (the MoCoOp text loss uses every name), the
/// position of each class in that full list, and for ImageNet-derived sets the index of each class
/// among ImageNet's 1000.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Registry name (`caltech101`, `imagenet_a`, …).
    pub name: String,
    /// The dataset's own folder (`$DATA/caltech-101`, …); few-shot subsets are saved under it and
    /// their paths are written relative to it.
    pub dir: PathBuf,
    /// Training images.
    pub train: Vec<Item>,
    /// Validation images. For ImageNet this is the test set, as in the reference code
    /// ([`Dataset::val_is_test`]).
    pub val: Vec<Item>,
    /// Test images.
    pub test: Vec<Item>,
    /// Class names by label (the classes of this dataset, after any base/new subsampling).
    pub classnames: Vec<String>,
    /// Every class name of the dataset before base/new subsampling, by original label.
    pub all_classnames: Vec<String>,
    /// For each label, its index in [`Dataset::all_classnames`] (identity unless subsampled).
    pub class_ids: Vec<usize>,
    /// For ImageNet and its variants: for each label, the index of the class among ImageNet's
    /// 1000 classes in `classnames.txt` order. ImageNet-A and -R keep the reference code's labels
    /// `0..200` (their own sorted folders) and a 200-way classifier; this maps those labels into
    /// the 1000-class space for code that scores with ImageNet's full classifier.
    pub imagenet_ids: Option<Vec<usize>>,
    /// True when `val` is the test set (ImageNet); few-shot sampling then leaves `val` alone.
    pub val_is_test: bool,
}

impl Dataset {
    /// Number of classes (after subsampling).
    pub fn num_classes(&self) -> usize {
        self.classnames.len()
    }

    /// Every item of the three splits, train first; duplicates (ImageNet's val = test) once.
    pub fn all_items(&self) -> Vec<&Item> {
        let mut seen = std::collections::HashSet::new();
        self.train
            .iter()
            .chain(&self.val)
            .chain(&self.test)
            .filter(|item| seen.insert((&item.path, item.label)))
            .collect()
    }

    /// The split named `train`, `val` or `test`.
    pub fn split(&self, split: Split) -> &[Item] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }
}

/// The three splits, for code that iterates over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training images.
    Train,
    /// Validation images.
    Val,
    /// Test images.
    Test,
}

impl Split {
    /// All three, in the usual order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// `train`, `val` or `test`, as in the split files.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Turns a raw class name (folder name, split-file entry) into the form used in prompts:
/// underscores become spaces, as every CoOp-family prompt learner does before tokenising
/// (`name.replace("_", " ")`). Idempotent.
pub fn prompt_name(raw: &str) -> String {
    raw.replace('_', " ")
}

/// Derives the label → class-name table from items, the way Dassl's `get_lab2cname` does, but
/// refusing what the reference would silently get wrong: one label with two names, a label without
/// any image (which would shift every later name), or no image at all (no classes to learn).
pub(crate) fn classnames_from_items<'a>(
    dataset: &str,
    source: &Path,
    items: impl IntoIterator<Item = &'a Item>,
) -> Result<Vec<String>> {
    let mut names: BTreeMap<usize, &str> = BTreeMap::new();
    for item in items {
        match names.get(&item.label) {
            Some(existing) if *existing != item.classname => {
                return Err(DataError::Inconsistent {
                    dataset: dataset.to_string(),
                    path: source.to_path_buf(),
                    message: format!(
                        "label {} has two class names, `{}` and `{}`",
                        item.label, existing, item.classname
                    ),
                });
            }
            Some(_) => {}
            None => {
                names.insert(item.label, &item.classname);
            }
        }
    }
    if names.is_empty() {
        return Err(DataError::Inconsistent {
            dataset: dataset.to_string(),
            path: source.to_path_buf(),
            message: "lists no images, so the dataset has no classes".into(),
        });
    }
    let mut out = Vec::with_capacity(names.len());
    for (expected, (label, name)) in names.into_iter().enumerate() {
        if label != expected {
            return Err(DataError::Inconsistent {
                dataset: dataset.to_string(),
                path: source.to_path_buf(),
                message: format!(
                    "no image has label {expected} (labels must be 0..C without gaps)"
                ),
            });
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Builds a dataset whose class list is complete (no subsampling yet).
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    name: &str,
    dir: PathBuf,
    train: Vec<Item>,
    val: Vec<Item>,
    test: Vec<Item>,
    classnames: Vec<String>,
    imagenet_ids: Option<Vec<usize>>,
    val_is_test: bool,
) -> Dataset {
    Dataset {
        name: name.to_string(),
        dir,
        train,
        val,
        test,
        class_ids: (0..classnames.len()).collect(),
        all_classnames: classnames.clone(),
        classnames,
        imagenet_ids,
        val_is_test,
    }
}
