#![warn(missing_docs)]
//! Datasets, few-shot sampling, base/new splits, augmentation and batching for prompt learning on
//! CLIP, reading the CoOp benchmark suite exactly as the PyTorch code bases do so that results are
//! comparable.
//!
//! - [`load_dataset`] reads any dataset of [`DATASETS`] (CoOp's folder layout and split files, or
//!   custom data as an image folder or a CSV/JSON list) into a [`Dataset`].
//! - [`few_shot`] draws (or reuses) the `k`-shot subset saved under the dataset folder;
//!   [`subsample_classes`] cuts base/new class halves.
//! - [`TrainTransform`] is the training augmentation, reproducible per `(seed, epoch, index)`.
//! - [`Loader`] decodes and transforms on worker threads and yields Burn [`ImageBatch`]es;
//!   [`ImageBatcher`] is the same as a Burn `Batcher`.
//! - [`check_dataset`] verifies a dataset on disk and prints a report.

mod aircraft;
pub mod augment;
mod batch;
mod check;
mod custom;
mod dataset;
mod error;
mod fewshot;
mod files;
mod imagenet;
mod loader;
mod registry;
mod split_file;
mod subsample;

pub use augment::{CropBox, TrainTransform, Transform, augment_rng};
pub use batch::{CpuBatch, ImageBatch, ImageBatcher, ImageItem};
pub use check::{
    CheckOptions, DecodeCheck, FileProblem, Report, SplitCounts, check_dataset, check_dataset_with,
};
pub use custom::{IMAGE_EXTENSIONS, read_image_folder};
pub use dataset::{Dataset, Item, Split, prompt_name};
pub use error::{DataError, Result};
pub use fewshot::{
    FewShot, FewShotFile, default_cache_dir, few_shot, few_shot_with_cache, fewshot_path,
    sample_per_class,
};
pub use imagenet::read_classnames_txt;
pub use loader::{BadImage, BatchPart, CpuEpoch, EpochIter, Loader, LoaderConfig, PlannedBatch};
pub use registry::{
    BENCHMARK, CALTECH101_RENAMES, DATASETS, DOMAIN_TARGETS, DatasetInfo, EUROSAT_RENAMES, Layout,
    dataset_info, load_dataset,
};
pub use split_file::{SplitEntry, SplitFile, read_split_file};
pub use subsample::{Subsample, subsample_classes};

/// Decodes an item's image to RGB, with an error naming the dataset and the file.
pub fn load_image(dataset: &str, item: &Item) -> Result<image::RgbImage> {
    mocoop_model::preprocess::load_rgb(&item.path).map_err(|e| DataError::BadImage {
        dataset: dataset.to_string(),
        path: item.path.clone(),
        message: e.message,
    })
}
