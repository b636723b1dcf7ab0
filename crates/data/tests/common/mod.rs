//! Miniature copies of the dataset layouts, built on the fly in temporary folders: real folder and
//! file names, split files with the real structure, tiny generated images.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

/// A small deterministic image whose pixels depend on `seed`.
pub fn pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(2_654_435_761);
        Rgb([
            (v & 0xff) as u8,
            ((x * 255) / w.max(1)) as u8,
            ((y * 255) / h.max(1) + seed * 13) as u8,
        ])
    })
}

/// Writes an image (format from the extension: `.jpg`/`.jpeg`/`.JPEG` as JPEG, `.png` as PNG).
pub fn write_image(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ext = path
        .extension()
        .unwrap()
        .to_string_lossy()
        .to_ascii_lowercase();
    let format = match ext.as_str() {
        "png" => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    pattern(w, h, seed).save_with_format(path, format).unwrap();
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// One class of a split-file dataset: the folder its images live in (if any) and the class name as
/// the split file stores it.
pub struct Class<'a> {
    pub folder: &'a str,
    pub json_name: &'a str,
}

/// Builds `<root>/<dir>/<image_dir>/...` images and `<root>/<dir>/<split_file>` for the classes,
/// with `counts` = (train, val, test) images per class. `rel` gives each image's path relative to
/// the image folder from (class folder, class index, split, number).
#[allow(clippy::too_many_arguments)]
pub fn split_dataset(
    root: &Path,
    dir: &str,
    image_dir: &str,
    split_file: &str,
    classes: &[Class],
    counts: (usize, usize, usize),
    rel: &dyn Fn(&str, usize, &str, usize) -> String,
) -> PathBuf {
    let base = root.join(dir);
    let images = if image_dir.is_empty() {
        base.clone()
    } else {
        base.join(image_dir)
    };
    let mut json = serde_json::Map::new();
    let mut seed = 0;
    for (split, n) in [("train", counts.0), ("val", counts.1), ("test", counts.2)] {
        let mut entries = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            for i in 0..n {
                let r = rel(class.folder, label, split, i);
                seed += 1;
                write_image(&images.join(&r), 12, 10, seed);
                entries.push(serde_json::json!([r, label, class.json_name]));
            }
        }
        json.insert(split.to_string(), serde_json::Value::Array(entries));
    }
    write(
        &base.join(split_file),
        &serde_json::to_string_pretty(&json).unwrap(),
    );
    base
}

/// The first 24 ImageNet classes (wnid, CLIP class name), in label order.
pub const IMAGENET_HEAD: &[(&str, &str)] = &[
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
    ("n01496331", "electric ray"),
    ("n01498041", "stingray"),
    ("n01514668", "rooster"),
    ("n01514859", "hen"),
    ("n01518878", "ostrich"),
    ("n01530575", "brambling"),
    ("n01531178", "goldfinch"),
    ("n01532829", "house finch"),
    ("n01534433", "junco"),
    ("n01537544", "indigo bunting"),
    ("n01558993", "American robin"),
    ("n01560419", "bulbul"),
    ("n01580077", "jay"),
    ("n01582220", "magpie"),
    ("n01592084", "chickadee"),
    ("n01601694", "American dipper"),
    ("n01608432", "kite (bird of prey)"),
    ("n01614925", "bald eagle"),
    ("n01616318", "vulture"),
];

/// `classnames.txt` for the given classes (`<wnid> <name>` lines).
pub fn classnames_txt(classes: &[(&str, &str)]) -> String {
    classes.iter().map(|(w, n)| format!("{w} {n}\n")).collect()
}

/// `<dir>/<wnid>/<prefix><i>.JPEG` for each wnid, `n` images each.
pub fn class_folders(dir: &Path, wnids: &[&str], n: usize, prefix: &str) {
    for (c, wnid) in wnids.iter().enumerate() {
        for i in 0..n {
            write_image(
                &dir.join(wnid).join(format!("{prefix}{i}.JPEG")),
                10,
                8,
                (c * 10 + i) as u32,
            );
        }
    }
}

/// A CoOp-style ImageNet with the first `classes` classes, `train`/`val` images per class.
pub fn imagenet(root: &Path, classes: usize, train: usize, val: usize) -> PathBuf {
    let base = root.join("imagenet");
    write(
        &base.join("classnames.txt"),
        &classnames_txt(&IMAGENET_HEAD[..classes]),
    );
    let wnids: Vec<&str> = IMAGENET_HEAD[..classes].iter().map(|c| c.0).collect();
    class_folders(&base.join("images/train"), &wnids, train, "n_train_");
    class_folders(&base.join("images/val"), &wnids, val, "ILSVRC2012_val_");
    base
}

/// An image-folder dataset with `n` PNGs per class.
pub fn image_folder(dir: &Path, classes: &[&str], n: usize, size: (u32, u32)) {
    for (c, class) in classes.iter().enumerate() {
        for i in 0..n {
            write_image(
                &dir.join(class).join(format!("img_{i}.png")),
                size.0,
                size.1,
                (c * 100 + i) as u32,
            );
        }
    }
}

/// A Caltech101 copy with the given raw folder names / split-file names, `counts` per class.
pub fn caltech(root: &Path, classes: &[Class], counts: (usize, usize, usize)) -> PathBuf {
    split_dataset(
        root,
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        classes,
        counts,
        &|folder, _, split, i| format!("{folder}/image_{split}_{i:04}.jpg"),
    )
}
