//! The table of datasets this crate reads (names as in `template-groups.toml`, folders as in CoOp's
//! DATASETS.md) and the one entry point, [`load_dataset`].

use std::path::{Path, PathBuf};

use crate::aircraft::read_aircraft;
use crate::custom::{read_imagefolder_dataset, read_list_dataset};
use crate::dataset::{Dataset, Split, assemble, classnames_from_items};
use crate::error::{DataError, Result};
use crate::imagenet::{read_imagenet, read_imagenet_folders, read_imagenet_v2};
use crate::split_file::read_split_file;

/// How a dataset is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Images under `image_dir` (relative to the dataset folder; empty for the folder itself) and a
    /// CoOp split file; `renames` maps raw class names to the reference's.
    SplitFile {
        /// Folder the split file's paths are relative to.
        image_dir: &'static str,
        /// The `split_zhou_*.json` file name.
        split_file: &'static str,
        /// Class renamings applied by the reference code.
        renames: &'static [(&'static str, &'static str)],
    },
    /// `images/train|val/<wnid>/` and `classnames.txt`.
    ImageNet,
    /// `<image_dir>/<0..999>/` and `classnames.txt`.
    ImageNetV2 {
        /// Folder of the numbered class folders.
        image_dir: &'static str,
    },
    /// `<image_dir>/<wnid>/` and `classnames.txt` (Sketch, A, R).
    ImageNetFolders {
        /// Folder of the class folders.
        image_dir: &'static str,
    },
    /// FGVC-Aircraft's `variants.txt` and `images_variant_*.txt`.
    Aircraft,
    /// A plain image folder (see [`crate::read_image_folder`]).
    ImageFolder,
    /// A CSV/JSON list (see `load_dataset("list", …)`).
    List,
}

/// One readable dataset.
#[derive(Debug, Clone, Copy)]
pub struct DatasetInfo {
    /// Name used on the command line and in `template-groups.toml`.
    pub name: &'static str,
    /// Human-readable name.
    pub title: &'static str,
    /// Folder under the data root (CoOp's DATASETS.md); empty for custom data, whose root is the
    /// data itself.
    pub dir: &'static str,
    /// Number of classes of the full dataset, where fixed.
    pub classes: Option<usize>,
    /// Whether it is a test-only domain-shift target of ImageNet.
    pub domain_shift: bool,
    /// How it is laid out.
    pub layout: Layout,
}

/// Caltech101's renamings (`datasets/caltech101.py`, `NEW_CNAMES`).
pub const CALTECH101_RENAMES: &[(&str, &str)] = &[
    ("airplanes", "airplane"),
    ("Faces", "face"),
    ("Leopards", "leopard"),
    ("Motorbikes", "motorbike"),
];

/// EuroSAT's renamings (`datasets/eurosat.py`, `NEW_CNAMES`): folder names to descriptive names.
pub const EUROSAT_RENAMES: &[(&str, &str)] = &[
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
    ("Highway", "Highway or Road"),
    ("Industrial", "Industrial Buildings"),
    ("Pasture", "Pasture Land"),
    ("PermanentCrop", "Permanent Crop Land"),
    ("Residential", "Residential Buildings"),
    ("River", "River"),
    ("SeaLake", "Sea or Lake"),
];

const fn split(
    image_dir: &'static str,
    split_file: &'static str,
    renames: &'static [(&'static str, &'static str)],
) -> Layout {
    Layout::SplitFile {
        image_dir,
        split_file,
        renames,
    }
}

const fn info(
    name: &'static str,
    title: &'static str,
    dir: &'static str,
    classes: Option<usize>,
    domain_shift: bool,
    layout: Layout,
) -> DatasetInfo {
    DatasetInfo {
        name,
        title,
        dir,
        classes,
        domain_shift,
        layout,
    }
}

/// The 11 datasets of the CoOp-family benchmark (base-to-new, few-shot, cross-dataset), in the
/// papers' order; ImageNet first, the source of the domain-generalisation protocol.
pub const BENCHMARK: [&str; 11] = [
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
];

/// ImageNet's domain-shift targets (test only).
pub const DOMAIN_TARGETS: [&str; 4] =
    ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"];

/// Every dataset [`load_dataset`] reads, in the order of CoOp's DATASETS.md, then custom data.
pub const DATASETS: &[DatasetInfo] = &[
    info(
        "imagenet",
        "ImageNet",
        "imagenet",
        Some(1000),
        false,
        Layout::ImageNet,
    ),
    info(
        "caltech101",
        "Caltech101",
        "caltech-101",
        Some(100),
        false,
        split(
            "101_ObjectCategories",
            "split_zhou_Caltech101.json",
            CALTECH101_RENAMES,
        ),
    ),
    info(
        "oxford_pets",
        "OxfordPets",
        "oxford_pets",
        Some(37),
        false,
        split("images", "split_zhou_OxfordPets.json", &[]),
    ),
    info(
        "stanford_cars",
        "StanfordCars",
        "stanford_cars",
        Some(196),
        false,
        split("", "split_zhou_StanfordCars.json", &[]),
    ),
    info(
        "oxford_flowers",
        "Flowers102",
        "oxford_flowers",
        Some(102),
        false,
        split("jpg", "split_zhou_OxfordFlowers.json", &[]),
    ),
    info(
        "food101",
        "Food101",
        "food-101",
        Some(101),
        false,
        split("images", "split_zhou_Food101.json", &[]),
    ),
    info(
        "fgvc_aircraft",
        "FGVCAircraft",
        "fgvc_aircraft",
        Some(100),
        false,
        Layout::Aircraft,
    ),
    info(
        "sun397",
        "SUN397",
        "sun397",
        Some(397),
        false,
        split("SUN397", "split_zhou_SUN397.json", &[]),
    ),
    info(
        "dtd",
        "DTD",
        "dtd",
        Some(47),
        false,
        split("images", "split_zhou_DescribableTextures.json", &[]),
    ),
    info(
        "eurosat",
        "EuroSAT",
        "eurosat",
        Some(10),
        false,
        split("2750", "split_zhou_EuroSAT.json", EUROSAT_RENAMES),
    ),
    info(
        "ucf101",
        "UCF101",
        "ucf101",
        Some(101),
        false,
        split("UCF-101-midframes", "split_zhou_UCF101.json", &[]),
    ),
    info(
        "imagenet_v2",
        "ImageNetV2",
        "imagenetv2",
        Some(1000),
        true,
        Layout::ImageNetV2 {
            image_dir: "imagenetv2-matched-frequency-format-val",
        },
    ),
    info(
        "imagenet_sketch",
        "ImageNet-Sketch",
        "imagenet-sketch",
        Some(1000),
        true,
        Layout::ImageNetFolders {
            image_dir: "images",
        },
    ),
    info(
        "imagenet_a",
        "ImageNet-A",
        "imagenet-adversarial",
        Some(200),
        true,
        Layout::ImageNetFolders {
            image_dir: "imagenet-a",
        },
    ),
    info(
        "imagenet_r",
        "ImageNet-R",
        "imagenet-rendition",
        Some(200),
        true,
        Layout::ImageNetFolders {
            image_dir: "imagenet-r",
        },
    ),
    info(
        "imagefolder",
        "ImageFolder",
        "",
        None,
        false,
        Layout::ImageFolder,
    ),
    info("list", "List", "", None, false, Layout::List),
    // The generated benchmark of `mocoop-world` (written by `mocoop demo`), in CoOp layout.
    info(
        "shapeworld",
        "ShapeWorld",
        "shapeworld",
        Some(32),
        false,
        split("", "split_zhou_ShapeWorld.json", &[]),
    ),
];

/// Looks a dataset up by name.
pub fn dataset_info(name: &str) -> Result<&'static DatasetInfo> {
    DATASETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            known: DATASETS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl DatasetInfo {
    /// The first thing inside the dataset folder that its layout requires; used to recognise a
    /// root that already is the dataset folder, and in messages.
    fn marker(&self) -> &'static str {
        match self.layout {
            Layout::SplitFile { split_file, .. } => split_file,
            Layout::ImageNet => "images",
            Layout::ImageNetV2 { image_dir } | Layout::ImageNetFolders { image_dir } => image_dir,
            Layout::Aircraft => "variants.txt",
            Layout::ImageFolder | Layout::List => "",
        }
    }

    /// What the dataset folder should hold, for error messages.
    fn expected(&self) -> String {
        match self.layout {
            Layout::SplitFile {
                image_dir: "",
                split_file,
                ..
            } => format!("{}/{split_file} and the image folders", self.dir),
            Layout::SplitFile {
                image_dir,
                split_file,
                ..
            } => format!("{}/{image_dir}/ and {}/{split_file}", self.dir, self.dir),
            Layout::ImageNet => format!(
                "{}/images/{{train,val}}/<wnid>/ and {}/classnames.txt",
                self.dir, self.dir
            ),
            Layout::ImageNetV2 { image_dir } | Layout::ImageNetFolders { image_dir } => {
                format!("{}/{image_dir}/ and {}/classnames.txt", self.dir, self.dir)
            }
            Layout::Aircraft => format!(
                "{}/images/, {}/variants.txt and {}/images_variant_{{train,val,test}}.txt",
                self.dir, self.dir, self.dir
            ),
            Layout::ImageFolder => {
                "one sub-folder per class (or train/, val/, test/ of them)".into()
            }
            Layout::List => "a .csv/.json list file, or a folder with train/val/test lists".into(),
        }
    }

    /// The dataset's folder given the data root: `root/<dir>` as CoOp expects, or `root` itself
    /// when it already is the dataset folder (its name is `<dir>` or it holds the layout's marker).
    pub fn resolve_dir(&self, root: &Path) -> Result<PathBuf> {
        let missing = |path: PathBuf| DataError::MissingRoot {
            dataset: self.name.to_string(),
            path,
            expected: self.expected(),
        };
        if matches!(self.layout, Layout::ImageFolder | Layout::List) {
            return if root.exists() {
                Ok(root.to_path_buf())
            } else {
                Err(missing(root.to_path_buf()))
            };
        }
        if !root.is_dir() {
            return Err(missing(root.to_path_buf()));
        }
        let nested = root.join(self.dir);
        if nested.is_dir() {
            return Ok(nested);
        }
        let named_like = root.file_name().is_some_and(|n| n == self.dir);
        if named_like || root.join(self.marker()).exists() {
            return Ok(root.to_path_buf());
        }
        Err(missing(nested))
    }
}

/// The file that lists each split's image paths (`[train, val, test]`), for datasets read from
/// split or list files; `None` when the images were found by listing folders.
pub(crate) type Sources = Option<[PathBuf; 3]>;

/// Reads a dataset without checking that listed images exist; also says which files list them.
pub(crate) fn read_dataset(name: &str, root: &Path) -> Result<(Dataset, Sources)> {
    let info = dataset_info(name)?;
    let dir = info.resolve_dir(root)?;
    Ok(match info.layout {
        Layout::SplitFile {
            image_dir,
            split_file,
            renames,
        } => {
            let split_path = dir.join(split_file);
            let image_root = if image_dir.is_empty() {
                dir.clone()
            } else {
                dir.join(image_dir)
            };
            let (train, val, test) = read_split_file(name, &split_path, &image_root, renames)?;
            let classnames =
                classnames_from_items(name, &split_path, train.iter().chain(&val).chain(&test))?;
            let dataset = assemble(name, dir, train, val, test, classnames, None, false);
            (
                dataset,
                Some([split_path.clone(), split_path.clone(), split_path]),
            )
        }
        Layout::Aircraft => {
            let dataset = read_aircraft(name, &dir)?;
            let file = |s: &str| dir.join(format!("images_variant_{s}.txt"));
            (dataset, Some([file("train"), file("val"), file("test")]))
        }
        Layout::ImageNet => (read_imagenet(name, &dir)?, None),
        Layout::ImageNetV2 { image_dir } => (read_imagenet_v2(name, &dir, image_dir)?, None),
        Layout::ImageNetFolders { image_dir } => {
            (read_imagenet_folders(name, &dir, image_dir)?, None)
        }
        Layout::ImageFolder => (read_imagefolder_dataset(name, &dir)?, None),
        Layout::List => {
            let (dataset, sources) = read_list_dataset(name, &dir)?;
            (dataset, Some(sources))
        }
    })
}

/// Reads dataset `name` (see [`DATASETS`]) from `root`, the folder that holds CoOp's dataset
/// folders (`$DATA`; the dataset's own folder is accepted too). For `imagefolder` and `list`,
/// `root` is the data itself. Every image path named by a split or list file is checked to exist;
/// the first missing one is an error naming it and the file that lists it.
pub fn load_dataset(name: &str, root: &Path) -> Result<Dataset> {
    let (dataset, sources) = read_dataset(name, root)?;
    if let Some(sources) = &sources {
        let mut checked = std::collections::HashSet::new();
        for (split, source) in Split::ALL.iter().zip(sources) {
            for item in dataset.split(*split) {
                if checked.insert(&item.path) && !item.path.is_file() {
                    return Err(DataError::MissingImage {
                        dataset: name.to_string(),
                        path: item.path.clone(),
                        listed_in: source.clone(),
                    });
                }
            }
        }
    }
    Ok(dataset)
}
