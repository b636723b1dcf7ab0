//! Base-to-new generalisation splits: the classes, ordered by label, are cut in two; the first
//! ⌈C/2⌉ are the base classes (trained on), the rest the new ones (only tested), each half with its
//! labels re-mapped to `0..`. The full class list stays available, since the MoCoOp text loss uses
//! every class name.

use std::collections::{BTreeSet, HashMap};

use crate::dataset::{Dataset, Item};

/// Which classes to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsample {
    /// The first ⌈C/2⌉ classes.
    Base,
    /// The remaining ⌊C/2⌋ classes.
    New,
    /// Every class (the dataset unchanged).
    All,
}

impl std::str::FromStr for Subsample {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "base" => Ok(Subsample::Base),
            "new" => Ok(Subsample::New),
            "all" => Ok(Subsample::All),
            other => Err(format!("unknown class subset `{other}` (base, new or all)")),
        }
    }
}

/// Keeps the base or new half of the classes in all three splits and re-maps their labels to
/// `0..`. As in the reference (`OxfordPets.subsample_classes`), the classes are those present in the
/// training split, sorted by label (all classes when train is empty).
/// [`Dataset::all_classnames`] is kept; [`Dataset::class_ids`] (and [`Dataset::imagenet_ids`]) give
/// each new label's original class.
pub fn subsample_classes(dataset: &Dataset, which: Subsample) -> Dataset {
    if which == Subsample::All {
        return dataset.clone();
    }
    let present: BTreeSet<usize> = if dataset.train.is_empty() {
        (0..dataset.classnames.len()).collect()
    } else {
        dataset.train.iter().map(|i| i.label).collect()
    };
    let labels: Vec<usize> = present.into_iter().collect();
    let half = labels.len().div_ceil(2);
    let selected = match which {
        Subsample::Base => &labels[..half],
        Subsample::New => &labels[half..],
        Subsample::All => unreachable!(),
    };
    let relabel: HashMap<usize, usize> = selected
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new))
        .collect();
    let keep = |items: &[Item]| -> Vec<Item> {
        items
            .iter()
            .filter_map(|item| {
                relabel.get(&item.label).map(|&label| Item {
                    label,
                    ..item.clone()
                })
            })
            .collect()
    };
    Dataset {
        name: dataset.name.clone(),
        dir: dataset.dir.clone(),
        train: keep(&dataset.train),
        val: keep(&dataset.val),
        test: keep(&dataset.test),
        classnames: selected
            .iter()
            .map(|&l| dataset.classnames[l].clone())
            .collect(),
        all_classnames: dataset.all_classnames.clone(),
        class_ids: selected.iter().map(|&l| dataset.class_ids[l]).collect(),
        imagenet_ids: dataset
            .imagenet_ids
            .as_ref()
            .map(|ids| selected.iter().map(|&l| ids[l]).collect()),
        val_is_test: dataset.val_is_test,
    }
}
