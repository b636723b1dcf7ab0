//! CoOp's fixed splits, `split_zhou_<Name>.json`: `{"train"|"val"|"test": [[relative_image_path,
//! label, classname], ...]}` with paths relative to the dataset's image folder. Reading these files
//! is what makes results comparable with the published numbers, so they are taken as they are.

use std::path::Path;

use serde::Deserialize;

use crate::dataset::{Item, prompt_name};
use crate::error::Result;
use crate::files::read_json;

/// One entry of a split file: `[relative_image_path, label, classname]`.
pub type SplitEntry = (String, usize, String);

/// The three lists of a split file, exactly as on disk.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct SplitFile {
    /// Training entries.
    pub train: Vec<SplitEntry>,
    /// Validation entries.
    pub val: Vec<SplitEntry>,
    /// Test entries.
    pub test: Vec<SplitEntry>,
}

/// Reads a split file and resolves its paths against `image_dir`. `renames` maps raw class names to
/// the names the reference uses (Caltech101's `airplanes` → `airplane`, EuroSAT's `AnnualCrop` →
/// `Annual Crop Land`, …); the published split files already hold the renamed forms, so the table
/// only matters for split files regenerated from the raw folders. Underscores become spaces.
pub fn read_split_file(
    dataset: &str,
    path: &Path,
    image_dir: &Path,
    renames: &[(&str, &str)],
) -> Result<(Vec<Item>, Vec<Item>, Vec<Item>)> {
    let split: SplitFile = read_json(dataset, path, "split file")?;
    let convert = |entries: Vec<SplitEntry>| -> Vec<Item> {
        entries
            .into_iter()
            .map(|(relative, label, classname)| {
                let renamed = renames
                    .iter()
                    .find(|(from, _)| *from == classname)
                    .map(|(_, to)| to.to_string())
                    .unwrap_or(classname);
                Item {
                    path: image_dir.join(relative),
                    label,
                    classname: prompt_name(&renamed),
                    domain: None,
                }
            })
            .collect()
    };
    Ok((
        convert(split.train),
        convert(split.val),
        convert(split.test),
    ))
}
