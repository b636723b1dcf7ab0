//! The world's classification benchmark, written in CoOp's layout so that it goes through the same
//! dataset code as the real benchmarks: `shapeworld/images/<class>/<split>_<n>_<style>.png` and
//! `shapeworld/split_zhou_ShapeWorld.json` (`{"train"|"val"|"test": [[path, label, classname]]}`,
//! paths relative to the `shapeworld` folder).
//!
//! Classes are colour-shape pairs ("red circle"). Labels put the base classes first, so that the
//! CoOp protocol's cut (first ⌈C/2⌉ labels = base) gives exactly [`BenchmarkConfig::base`] and
//! [`BenchmarkConfig::new`]. By default the new classes are the pairs held out of pretraining
//! ([`crate::default_held_out`]) and the base classes are pairs seen in pretraining; both halves
//! contain every colour and every shape twice. Images of every class and split cycle through all
//! styles evenly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::attributes::{Combo, Pattern, Size, Style};
use crate::render::{Scene, render};
use crate::rng::Rng;
use crate::world::{default_held_out, parallel_map, stream};

/// Folder of the benchmark under the data root (CoOp style).
pub const DATASET_DIR: &str = "shapeworld";
/// The split file inside [`DATASET_DIR`].
pub const SPLIT_FILE: &str = "split_zhou_ShapeWorld.json";
/// Folder of the images inside [`DATASET_DIR`].
pub const IMAGE_DIR: &str = "images";
/// Metadata file inside [`DATASET_DIR`] (configuration, class halves, every image's scene).
pub const META_FILE: &str = "shapeworld_meta.json";
/// Section of the template-group table (`assets/template-groups.toml`) for this benchmark.
pub const TEMPLATE_SECTION: &str = "shapeworld";

/// Diagonals of the colour × shape grid that form the default base classes (seen in pretraining).
pub const BASE_DIAGONALS: [usize; 2] = [0, 3];

/// The default base classes: 16 pairs seen in pretraining, every colour and shape twice.
pub fn default_base() -> Vec<Combo> {
    Combo::all()
        .into_iter()
        .filter(|c| BASE_DIAGONALS.contains(&c.diagonal()))
        .collect()
}

/// A benchmark split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchSplit {
    /// Training images (few-shot subsets are drawn from these).
    Train,
    /// Validation images.
    Val,
    /// Test images.
    Test,
}

impl BenchSplit {
    /// All three.
    pub const ALL: [BenchSplit; 3] = [BenchSplit::Train, BenchSplit::Val, BenchSplit::Test];

    /// `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            BenchSplit::Train => "train",
            BenchSplit::Val => "val",
            BenchSplit::Test => "test",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkConfig {
    /// Seed of every image.
    pub seed: u64,
    /// Side of the images, pixels.
    pub image_size: u32,
    /// Training images per class.
    pub train_per_class: usize,
    /// Validation images per class.
    pub val_per_class: usize,
    /// Test images per class.
    pub test_per_class: usize,
    /// Base classes (labels `0..base.len()`).
    pub base: Vec<Combo>,
    /// New classes (the following labels).
    pub new: Vec<Combo>,
    /// Styles cycled through within every class and split.
    pub styles: Vec<Style>,
}

impl BenchmarkConfig {
    /// The default benchmark of `seed`: 16 base and 16 new classes, 32 px, 32 train, 8 val and 30
    /// test images per class.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            image_size: 32,
            train_per_class: 32,
            val_per_class: 8,
            test_per_class: 30,
            base: default_base(),
            new: default_held_out(),
            styles: Style::ALL.to_vec(),
        }
    }

    /// Sets the number of images per class and split.
    pub fn with_counts(mut self, train: usize, val: usize, test: usize) -> Self {
        self.train_per_class = train;
        self.val_per_class = val;
        self.test_per_class = test;
        self
    }

    /// Every class in label order: base, then new.
    pub fn classes(&self) -> Vec<Combo> {
        self.base.iter().chain(&self.new).copied().collect()
    }

    /// Class names in label order ("red circle", …).
    pub fn classnames(&self) -> Vec<String> {
        self.classes().into_iter().map(Combo::name).collect()
    }

    /// Images per class in `split`.
    pub fn per_class(&self, split: BenchSplit) -> usize {
        match split {
            BenchSplit::Train => self.train_per_class,
            BenchSplit::Val => self.val_per_class,
            BenchSplit::Test => self.test_per_class,
        }
    }

    /// The style of image `index` of class `label` (styles cycle evenly within a class).
    pub fn style_of(&self, label: usize, index: usize) -> Style {
        self.styles[(index + label) % self.styles.len()]
    }

    /// Image `index` of class `label` in `split`, exactly as [`write_benchmark`] writes it.
    ///
    /// # Panics
    /// If `label` is not a class of the benchmark.
    pub fn sample(&self, split: BenchSplit, label: usize, index: usize) -> (Scene, RgbImage) {
        let combo = self.classes()[label];
        let split_id = BenchSplit::ALL
            .iter()
            .position(|s| *s == split)
            .unwrap_or(0) as u64;
        let mut rng = Rng::new(
            self.seed,
            stream::BENCHMARK + split_id,
            (label as u64) << 32 | index as u64,
        );
        let scene = Scene {
            shape: combo.shape,
            colour: combo.colour,
            pattern: *rng.pick(Pattern::ALL),
            size: *rng.pick(Size::ALL),
            style: self.style_of(label, index),
        };
        let image = render(&scene, self.image_size, &mut rng);
        (scene, image)
    }

    /// Path of an image relative to the benchmark folder.
    pub fn relative_path(&self, split: BenchSplit, label: usize, index: usize) -> String {
        let combo = self.classes()[label];
        format!(
            "{IMAGE_DIR}/{}/{}_{index:04}_{}.png",
            combo.dir_name(),
            split.name(),
            self.style_of(label, index).name()
        )
    }
}

/// Why the benchmark could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An image could not be encoded.
    #[error("cannot write image {path}: {message}")]
    Image {
        /// The path.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// The configuration is unusable.
    #[error("invalid benchmark configuration: {0}")]
    Config(String),
    /// The metadata file is missing or malformed.
    #[error("cannot read benchmark metadata {path}: {message}")]
    Meta {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One image of the written benchmark, as recorded in the metadata file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Path relative to the benchmark folder.
    pub path: String,
    /// The split.
    pub split: BenchSplit,
    /// Label (base first).
    pub label: usize,
    /// What the image shows and how it is drawn.
    pub scene: Scene,
}

/// The metadata file: the configuration, the class halves and every image's scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkMeta {
    /// The configuration that generated the benchmark.
    pub config: BenchmarkConfig,
    /// Class names in label order.
    pub classnames: Vec<String>,
    /// Base class names (the first labels).
    pub base: Vec<String>,
    /// New class names.
    pub new: Vec<String>,
    /// The template-group section to use with this benchmark.
    pub template_section: String,
    /// Every image.
    pub images: Vec<ImageRecord>,
}

impl BenchmarkMeta {
    /// Reads `shapeworld_meta.json` from a benchmark folder.
    pub fn read(dir: &Path) -> Result<Self, BenchmarkError> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| BenchmarkError::Meta {
            path: path.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| BenchmarkError::Meta {
            path,
            message: e.to_string(),
        })
    }

    /// The style of each image by its path relative to the benchmark folder.
    pub fn styles_by_path(&self) -> BTreeMap<&str, Style> {
        self.images
            .iter()
            .map(|r| (r.path.as_str(), r.scene.style))
            .collect()
    }
}

/// Reads the style an image was drawn in from its file name (`…_<style>.png`).
pub fn style_from_path(path: &Path) -> Option<Style> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit('_').next()?.parse().ok()
}

/// Where a written benchmark lies and what it holds.
#[derive(Debug, Clone)]
pub struct Benchmark {
    /// The benchmark folder (`<root>/shapeworld`).
    pub dir: PathBuf,
    /// The split file.
    pub split_file: PathBuf,
    /// Class names in label order.
    pub classnames: Vec<String>,
    /// Number of base classes (the first labels).
    pub num_base: usize,
    /// Images written per split: train, val, test.
    pub counts: [usize; 3],
}

/// Writes the benchmark under `root/shapeworld/` (images, split file, metadata), replacing any
/// files of the same names. Images are rendered on all available threads.
pub fn write_benchmark(root: &Path, config: &BenchmarkConfig) -> Result<Benchmark, BenchmarkError> {
    let classes = config.classes();
    if config.base.is_empty() || config.new.is_empty() {
        return Err(BenchmarkError::Config(
            "need at least one base and one new class".into(),
        ));
    }
    if config.base.len() != classes.len().div_ceil(2) {
        return Err(BenchmarkError::Config(format!(
            "{} base and {} new classes: the CoOp cut (first ⌈C/2⌉ labels) needs ⌈C/2⌉ base classes",
            config.base.len(),
            config.new.len()
        )));
    }
    let mut unique = classes.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != classes.len() {
        return Err(BenchmarkError::Config("a class is listed twice".into()));
    }
    if config.styles.is_empty() {
        return Err(BenchmarkError::Config("no style".into()));
    }
    let dir = root.join(DATASET_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BenchmarkError::Io { path, source }
    };
    for combo in &classes {
        let class_dir = dir.join(IMAGE_DIR).join(combo.dir_name());
        std::fs::create_dir_all(&class_dir).map_err(io(&class_dir))?;
    }
    let jobs: Vec<(BenchSplit, usize, usize)> = BenchSplit::ALL
        .iter()
        .flat_map(|&split| {
            (0..classes.len()).flat_map(move |label| {
                (0..config.per_class(split)).map(move |index| (split, label, index))
            })
        })
        .collect();
    let written = parallel_map(jobs.len(), |j| -> Result<ImageRecord, BenchmarkError> {
        let (split, label, index) = jobs[j];
        let (scene, image) = config.sample(split, label, index);
        let relative = config.relative_path(split, label, index);
        let path = dir.join(&relative);
        image.save(&path).map_err(|e| BenchmarkError::Image {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(ImageRecord {
            path: relative,
            split,
            label,
            scene,
        })
    });
    let images = written.into_iter().collect::<Result<Vec<_>, _>>()?;
    let classnames = config.classnames();
    let mut splits: BTreeMap<&str, Vec<(String, usize, String)>> = BTreeMap::new();
    for split in BenchSplit::ALL {
        splits.insert(split.name(), Vec::new());
    }
    for record in &images {
        splits
            .get_mut(record.split.name())
            .expect("all splits")
            .push((
                record.path.clone(),
                record.label,
                classnames[record.label].clone(),
            ));
    }
    let split_file = dir.join(SPLIT_FILE);
    let json = serde_json::to_string(&splits).expect("split lists serialise");
    std::fs::write(&split_file, json).map_err(io(&split_file))?;
    let meta = BenchmarkMeta {
        config: config.clone(),
        base: classnames[..config.base.len()].to_vec(),
        new: classnames[config.base.len()..].to_vec(),
        classnames: classnames.clone(),
        template_section: TEMPLATE_SECTION.to_string(),
        images,
    };
    let meta_path = dir.join(META_FILE);
    let json = serde_json::to_string(&meta).expect("metadata serialises");
    std::fs::write(&meta_path, json).map_err(io(&meta_path))?;
    let counts = BenchSplit::ALL.map(|s| config.per_class(s) * classes.len());
    Ok(Benchmark {
        dir,
        split_file,
        classnames,
        num_base: config.base.len(),
        counts,
    })
}
