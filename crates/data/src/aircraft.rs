//! FGVC-Aircraft, the one CoOp dataset without a `split_zhou` file: its own `variants.txt` (one
//! variant per line; line order is label order) and `images_variant_{train,val,test}.txt` (lines
//! `<image id> <variant>`, the image being `images/<image id>.jpg`).

use std::collections::HashMap;
use std::path::Path;

use crate::dataset::{Dataset, Item, assemble, prompt_name};
use crate::error::{DataError, Result};
use crate::files::read_text;

/// Reads the dataset from `dir` (`$DATA/fgvc_aircraft`, the `data/` folder of the archive).
pub(crate) fn read_aircraft(name: &str, dir: &Path) -> Result<Dataset> {
    let variants_path = dir.join("variants.txt");
    let variants: Vec<String> = read_text(name, &variants_path, "class list (variants.txt)")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let labels: HashMap<&str, usize> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    let image_dir = dir.join("images");
    let read = |split: &str| -> Result<Vec<Item>> {
        let path = dir.join(format!("images_variant_{split}.txt"));
        let text = read_text(name, &path, "split file")?;
        let mut items = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((image, variant)) = line.split_once(' ') else {
                return Err(DataError::Format {
                    dataset: name.to_string(),
                    path: path.clone(),
                    line: number + 1,
                    message: format!("expected `<image id> <variant>`, found `{line}`"),
                });
            };
            let variant = variant.trim();
            let Some(&label) = labels.get(variant) else {
                return Err(DataError::Format {
                    dataset: name.to_string(),
                    path: path.clone(),
                    line: number + 1,
                    message: format!("variant `{variant}` is not in {}", variants_path.display()),
                });
            };
            items.push(Item {
                path: image_dir.join(format!("{image}.jpg")),
                label,
                classname: prompt_name(variant),
                domain: None,
            });
        }
        Ok(items)
    };
    let (train, val, test) = (read("train")?, read("val")?, read("test")?);
    let classnames = variants.iter().map(|v| prompt_name(v)).collect();
    Ok(assemble(
        name,
        dir.to_path_buf(),
        train,
        val,
        test,
        classnames,
        None,
        false,
    ))
}
