//! ImageNet and its four domain-shift targets, read from class folders plus CoOp's
//! `classnames.txt` (`<wnid> <class name>` per line, the names from CLIP's prompt-engineering
//! notebook), with the labels the reference code gives them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Item, assemble, prompt_name};
use crate::error::{DataError, Result};
use crate::files::{list_dirs, list_files, read_text};

/// `classnames.txt` in file order: `(wnid, class name)`. The file order is ImageNet's label order.
pub fn read_classnames_txt(dataset: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let text = read_text(dataset, path, "class-name list (classnames.txt)")?;
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (wnid, name) = match line.split_once(char::is_whitespace) {
            Some((wnid, name)) if !name.trim().is_empty() => (wnid, name.trim()),
            _ => {
                return Err(DataError::Format {
                    dataset: dataset.to_string(),
                    path: path.to_path_buf(),
                    line: number + 1,
                    message: format!("expected `<folder> <class name>`, found `{line}`"),
                });
            }
        };
        if seen.insert(wnid.to_string(), number + 1).is_some() {
            return Err(DataError::Format {
                dataset: dataset.to_string(),
                path: path.to_path_buf(),
                line: number + 1,
                message: format!("folder `{wnid}` is listed twice"),
            });
        }
        out.push((wnid.to_string(), prompt_name(name)));
    }
    Ok(out)
}

/// Items of `<dir>/<class folder>/<image>`, labels by sorted folder name; every folder must be in
/// `classnames.txt`. Returns the items and the folder names by label.
fn read_class_folders(
    dataset: &str,
    dir: &Path,
    what: &str,
    names: &HashMap<&str, (usize, &str)>,
    classnames_path: &Path,
    domain: Option<&str>,
) -> Result<(Vec<Item>, Vec<String>)> {
    let folders = list_dirs(dataset, dir, what)?;
    let mut items = Vec::new();
    let mut wnids = Vec::with_capacity(folders.len());
    for (label, (folder, path)) in folders.into_iter().enumerate() {
        let Some((_, classname)) = names.get(folder.as_str()) else {
            return Err(DataError::Inconsistent {
                dataset: dataset.to_string(),
                path: classnames_path.to_path_buf(),
                message: format!(
                    "class folder `{folder}` (in {}) is not listed",
                    dir.display()
                ),
            });
        };
        for image in list_files(dataset, &path, "class folder")? {
            items.push(Item {
                path: image,
                label,
                classname: classname.to_string(),
                domain: domain.map(str::to_string),
            });
        }
        wnids.push(folder);
    }
    Ok((items, wnids))
}

fn index_classnames(classnames: &[(String, String)]) -> HashMap<&str, (usize, &str)> {
    classnames
        .iter()
        .enumerate()
        .map(|(i, (wnid, name))| (wnid.as_str(), (i, name.as_str())))
        .collect()
}

fn names_and_ids(
    wnids: &[String],
    index: &HashMap<&str, (usize, &str)>,
) -> (Vec<String>, Vec<usize>) {
    wnids
        .iter()
        .map(|w| {
            let (id, name) = index[w.as_str()];
            (name.to_string(), id)
        })
        .unzip()
}

/// ImageNet: `images/train/<wnid>/` and `images/val/<wnid>/`, labels by sorted wnid; the val images
/// are the test set and also serve as the validation set, as in CoOp.
pub(crate) fn read_imagenet(name: &str, dir: &Path) -> Result<Dataset> {
    let classnames_path = dir.join("classnames.txt");
    let classnames = read_classnames_txt(name, &classnames_path)?;
    let index = index_classnames(&classnames);
    let images = dir.join("images");
    let (train, train_wnids) = read_class_folders(
        name,
        &images.join("train"),
        "image folder",
        &index,
        &classnames_path,
        None,
    )?;
    let (test, test_wnids) = read_class_folders(
        name,
        &images.join("val"),
        "image folder",
        &index,
        &classnames_path,
        None,
    )?;
    if train_wnids != test_wnids {
        return Err(DataError::Inconsistent {
            dataset: name.to_string(),
            path: images,
            message: format!(
                "train/ has {} class folders and val/ has {}, or their names differ; labels would not agree",
                train_wnids.len(),
                test_wnids.len()
            ),
        });
    }
    let (names, ids) = names_and_ids(&train_wnids, &index);
    Ok(assemble(
        name,
        dir.to_path_buf(),
        train,
        test.clone(),
        test,
        names,
        Some(ids),
        true,
    ))
}

/// ImageNetV2 (matched frequency): folders `0` … `999` named by ImageNet label, class names from
/// `classnames.txt` in file order. Test only (the data are also exposed as `train`, as Dassl does).
pub(crate) fn read_imagenet_v2(name: &str, dir: &Path, image_dir: &str) -> Result<Dataset> {
    let classnames_path = dir.join("classnames.txt");
    let classnames = read_classnames_txt(name, &classnames_path)?;
    let images = dir.join(image_dir);
    if !images.is_dir() {
        return Err(DataError::MissingFile {
            dataset: name.to_string(),
            path: images,
            what: "image folder".into(),
        });
    }
    let mut items = Vec::new();
    for (label, (_, classname)) in classnames.iter().enumerate() {
        let folder = images.join(label.to_string());
        for image in list_files(name, &folder, "class folder")? {
            items.push(Item {
                path: image,
                label,
                classname: classname.clone(),
                domain: Some(name.to_string()),
            });
        }
    }
    let names: Vec<String> = classnames.into_iter().map(|(_, n)| n).collect();
    let ids = (0..names.len()).collect();
    Ok(assemble(
        name,
        dir.to_path_buf(),
        items.clone(),
        Vec::new(),
        items,
        names,
        Some(ids),
        false,
    ))
}

/// ImageNet-Sketch, -A and -R: `<image_dir>/<wnid>/` class folders, labels by sorted folder name as
/// the reference code gives them (`0..200` for A and R, whose folders cover 200 of the 1000
/// classes), class names from `classnames.txt`, and [`Dataset::imagenet_ids`] mapping each label to
/// its ImageNet class. Files beside the folders (A's and R's `README.txt`) are ignored.
pub(crate) fn read_imagenet_folders(name: &str, dir: &Path, image_dir: &str) -> Result<Dataset> {
    let classnames_path = dir.join("classnames.txt");
    let classnames = read_classnames_txt(name, &classnames_path)?;
    let index = index_classnames(&classnames);
    let images: PathBuf = dir.join(image_dir);
    let (items, wnids) = read_class_folders(
        name,
        &images,
        "image folder",
        &index,
        &classnames_path,
        Some(name),
    )?;
    let (names, ids) = names_and_ids(&wnids, &index);
    Ok(assemble(
        name,
        dir.to_path_buf(),
        items.clone(),
        Vec::new(),
        items,
        names,
        Some(ids),
        false,
    ))
}
