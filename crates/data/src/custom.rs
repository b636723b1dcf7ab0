//! Custom data in the two simplest forms: an image folder (one sub-folder per class, sorted, as
//! torchvision's `ImageFolder`) and a list file (`path,label[,classname]` as CSV, or the same as
//! JSON).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dataset::{Dataset, Item, assemble, classnames_from_items, prompt_name};
use crate::error::{DataError, Result};
use crate::files::{list_dirs, list_files, read_json, read_text};

/// File extensions taken as images in an image folder (case-insensitive), as torchvision's
/// `IMG_EXTENSIONS` restricted to the formats this crate decodes. Other files are ignored.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp"];

fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Sub-folders of an image folder that are not classes: where few-shot subsets are saved.
const NOT_CLASSES: &[&str] = &["split_fewshot"];

/// Class folders of an image folder, sorted by name.
fn class_dirs(dataset: &str, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut dirs = list_dirs(dataset, dir, "image folder")?;
    dirs.retain(|(name, _)| !NOT_CLASSES.contains(&name.as_str()));
    Ok(dirs)
}

/// One folder per class: returns `(class folder names sorted, images per class folder)`.
fn scan_image_folder(dataset: &str, dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for (name, path) in class_dirs(dataset, dir)? {
        let images = list_files(dataset, &path, "class folder")?
            .into_iter()
            .filter(|p| is_image_name(p))
            .collect();
        out.push((name, images));
    }
    Ok(out)
}

/// Reads an image folder (`dir/<class>/<image>`): labels by sorted class-folder name, class names
/// from the folder names with underscores as spaces; a `split_fewshot` folder (saved few-shot
/// subsets) is not a class. Returns the items and the class names.
pub fn read_image_folder(dataset: &str, dir: &Path) -> Result<(Vec<Item>, Vec<String>)> {
    let classes = scan_image_folder(dataset, dir)?;
    let mut items = Vec::new();
    let mut names = Vec::new();
    for (label, (folder, images)) in classes.into_iter().enumerate() {
        let classname = prompt_name(&folder);
        items.extend(images.into_iter().map(|path| Item {
            path,
            label,
            classname: classname.clone(),
            domain: None,
        }));
        names.push(classname);
    }
    Ok((items, names))
}

/// `imagefolder`: if `root/train/` exists, `train/`, `val/` and `test/` are image folders (val and
/// test optional; test defaults to val) whose classes are those of `train/`; otherwise `root` itself
/// is one image folder used as both train and test (as the reference does for test-only sets).
pub(crate) fn read_imagefolder_dataset(name: &str, root: &Path) -> Result<Dataset> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        let (items, names) = read_image_folder(name, root)?;
        return Ok(assemble(
            name,
            root.to_path_buf(),
            items.clone(),
            Vec::new(),
            items,
            names,
            None,
            false,
        ));
    }
    let (train, names) = read_image_folder(name, &train_dir)?;
    let folders: Vec<String> = class_dirs(name, &train_dir)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let read_other = |split: &str| -> Result<Option<Vec<Item>>> {
        let dir = root.join(split);
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut items = Vec::new();
        for (folder, images) in scan_image_folder(name, &dir)? {
            let Some(label) = folders.iter().position(|f| *f == folder) else {
                return Err(DataError::Inconsistent {
                    dataset: name.to_string(),
                    path: dir.join(&folder),
                    message: format!(
                        "class folder `{folder}` has no counterpart in {}",
                        train_dir.display()
                    ),
                });
            };
            items.extend(images.into_iter().map(|path| Item {
                path,
                label,
                classname: names[label].clone(),
                domain: None,
            }));
        }
        Ok(Some(items))
    };
    let val = read_other("val")?;
    let test = read_other("test")?;
    let (val, test) = match (val, test) {
        (Some(v), Some(t)) => (v, t),
        (Some(v), None) => (v.clone(), v),
        (None, Some(t)) => (Vec::new(), t),
        (None, None) => (Vec::new(), Vec::new()),
    };
    Ok(assemble(
        name,
        root.to_path_buf(),
        train,
        val,
        test,
        names,
        None,
        false,
    ))
}

/// One row of a list file before resolution.
#[derive(Debug, Clone)]
struct Row {
    path: String,
    label: usize,
    classname: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonRow {
    Triple(String, usize, String),
    Pair(String, usize),
    Object {
        path: String,
        label: usize,
        #[serde(default)]
        classname: Option<String>,
    },
}

impl From<JsonRow> for Row {
    fn from(row: JsonRow) -> Row {
        match row {
            JsonRow::Triple(path, label, classname) => Row {
                path,
                label,
                classname: Some(classname),
            },
            JsonRow::Pair(path, label) => Row {
                path,
                label,
                classname: None,
            },
            JsonRow::Object {
                path,
                label,
                classname,
            } => Row {
                path,
                label,
                classname,
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonList {
    Rows(Vec<JsonRow>),
    Splits {
        #[serde(default)]
        train: Vec<JsonRow>,
        #[serde(default)]
        val: Vec<JsonRow>,
        #[serde(default)]
        test: Vec<JsonRow>,
    },
}

fn read_csv(dataset: &str, path: &Path) -> Result<Vec<Row>> {
    let text = read_text(dataset, path, "list file")?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ',').map(str::trim);
        let (file, label, classname) = (fields.next(), fields.next(), fields.next());
        let (Some(file), Some(label)) = (file, label) else {
            return Err(DataError::Format {
                dataset: dataset.to_string(),
                path: path.to_path_buf(),
                line: number + 1,
                message: format!("expected `path,label[,classname]`, found `{line}`"),
            });
        };
        let Ok(label) = label.parse::<usize>() else {
            if rows.is_empty() && number == 0 {
                continue; // a header line such as `path,label,classname`
            }
            return Err(DataError::Format {
                dataset: dataset.to_string(),
                path: path.to_path_buf(),
                line: number + 1,
                message: format!("label `{label}` is not a non-negative integer"),
            });
        };
        rows.push(Row {
            path: file.to_string(),
            label,
            classname: classname.filter(|c| !c.is_empty()).map(str::to_string),
        });
    }
    Ok(rows)
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Reads one list file: `Ok((train, val, test))`, where a plain list (not split three ways) is
/// returned as `(rows, [], rows)`.
type RowSplits = (Vec<Row>, Vec<Row>, Vec<Row>);

fn read_list_file(dataset: &str, path: &Path) -> Result<RowSplits> {
    if is_json(path) {
        let list: JsonList = read_json(dataset, path, "list file")?;
        let rows = |v: Vec<JsonRow>| v.into_iter().map(Row::from).collect::<Vec<_>>();
        Ok(match list {
            JsonList::Splits { train, val, test } => (rows(train), rows(val), rows(test)),
            JsonList::Rows(all) => {
                let all = rows(all);
                (all.clone(), Vec::new(), all)
            }
        })
    } else {
        let all = read_csv(dataset, path)?;
        Ok((all.clone(), Vec::new(), all))
    }
}

/// `list`: `root` is a list file (`.csv` or `.json`), or a folder holding `train`, `val` and `test`
/// lists (`.csv` or `.json`; at least one of train and test). Paths are relative to the list's
/// folder (or absolute). CSV rows are `path,label[,classname]` (a header line is skipped); JSON is
/// an array of `[path, label(, classname)]` or `{"path", "label", "classname"}` entries, or an object
/// with `train`/`val`/`test` arrays (CoOp's split-file structure). Labels without a class name in
/// any row take theirs from `classnames.txt` beside the list (one name per line, line i = label i),
/// else the label number itself.
pub(crate) fn read_list_dataset(name: &str, root: &Path) -> Result<(Dataset, [PathBuf; 3])> {
    let (base, splits, sources) = if root.is_dir() {
        let find = |split: &str| -> Option<PathBuf> {
            ["csv", "json"]
                .iter()
                .map(|ext| root.join(format!("{split}.{ext}")))
                .find(|p| p.is_file())
        };
        let (train_file, val_file, test_file) = (find("train"), find("val"), find("test"));
        if train_file.is_none() && test_file.is_none() {
            return Err(DataError::MissingFile {
                dataset: name.to_string(),
                path: root.join("train.csv"),
                what: "list file (train.csv/.json or test.csv/.json)".into(),
            });
        }
        let read = |file: &Option<PathBuf>| -> Result<Vec<Row>> {
            match file {
                Some(f) => Ok(read_list_file(name, f)?.0),
                None => Ok(Vec::new()),
            }
        };
        let splits = (read(&train_file)?, read(&val_file)?, read(&test_file)?);
        let any = train_file.clone().or(test_file.clone()).unwrap_or_default();
        let sources = [train_file, val_file, test_file].map(|f| f.unwrap_or_else(|| any.clone()));
        (root.to_path_buf(), splits, sources)
    } else if root.is_file() {
        let base = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        let file = root.to_path_buf();
        (
            base,
            read_list_file(name, root)?,
            [file.clone(), file.clone(), file],
        )
    } else {
        return Err(DataError::MissingRoot {
            dataset: name.to_string(),
            path: root.to_path_buf(),
            expected: "a .csv/.json list file, or a folder with train/val/test lists".into(),
        });
    };

    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    for row in splits.0.iter().chain(&splits.1).chain(&splits.2) {
        if let Some(c) = &row.classname {
            names.entry(row.label).or_insert_with(|| c.clone());
        }
    }
    let fallback: Vec<String> = {
        let path = base.join("classnames.txt");
        if path.is_file() {
            read_text(name, &path, "class-name list")?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        } else {
            Vec::new()
        }
    };
    let convert = |rows: Vec<Row>| -> Vec<Item> {
        rows.into_iter()
            .map(|row| {
                let raw = row
                    .classname
                    .or_else(|| names.get(&row.label).cloned())
                    .or_else(|| fallback.get(row.label).cloned())
                    .unwrap_or_else(|| row.label.to_string());
                Item {
                    path: base.join(&row.path),
                    label: row.label,
                    classname: prompt_name(&raw),
                    domain: None,
                }
            })
            .collect()
    };
    let (train, val, test) = (convert(splits.0), convert(splits.1), convert(splits.2));
    let classnames =
        classnames_from_items(name, &sources[0], train.iter().chain(&val).chain(&test))?;
    Ok((
        assemble(name, base, train, val, test, classnames, None, false),
        sources,
    ))
}
