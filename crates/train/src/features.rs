//! Training on cached image features: without LN tuning the image encoder is frozen, so the
//! features of a fixed number of augmented views of every training image can be computed once,
//! without autodiff, and every step then costs only the text side (all `E × C` prompts through
//! the text encoder) and the small mixture on top.
//!
//! View `v` of image `i` is the augmentation uncached training draws for `(seed, epoch v, i)`, so
//! with at least as many views as epochs a cached run sees the very images an uncached run does.

use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};

use mocoop_data::{ImageBatch, Item, Loader, LoaderConfig, PlannedBatch};
use mocoop_model::Clip;
use mocoop_model::clip::l2_normalize;

use crate::TrainError;
use crate::data::{EpochCursor, SkippedImages, device_part};

/// L2-normalised image features of `views` augmented views of every item, `[views · N, D]`
/// (row `v · N + i`), and which items could be read.
#[derive(Debug, Clone)]
pub struct FeatureCache<B: Backend> {
    /// The features.
    pub features: Tensor<B, 2>,
    /// Whether item `i` has features (an unreadable image skipped with `skip_bad_images` has not).
    pub present: Vec<bool>,
    /// Views per image.
    pub views: usize,
}

impl<B: Backend> FeatureCache<B> {
    /// Encodes the views with `clip`'s image encoder, `config.batch_size` images at a time,
    /// decoding and augmenting exactly as the training loader `config` does.
    pub fn compute(
        clip: &Clip<B>,
        dataset: &str,
        items: &[Item],
        config: LoaderConfig,
        views: usize,
        quiet: bool,
        device: &B::Device,
    ) -> Result<(Self, SkippedImages), TrainError> {
        let n = items.len();
        let d = clip.config().embed_dim;
        let in_order = LoaderConfig {
            shuffle: false,
            ..config
        };
        let loader = Loader::new(dataset, items.to_vec(), in_order);
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new((views * n) as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("caching image features {bar:30} {pos}/{len} {eta}")
                .expect("template"),
        );
        let mut values = vec![0f32; views * n * d];
        let mut present = vec![false; n];
        let skipped = SkippedImages::default();
        for view in 0..views {
            let mut epoch = loader.epoch::<B>(view as u64, device);
            for batch in epoch.by_ref() {
                let batch = batch?;
                let f = l2_normalize(clip.vision.forward(batch.images));
                let rows = f
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| TrainError::Run(format!("reading image features: {e:?}")))?;
                for (row, &i) in rows.chunks_exact(d).zip(&batch.indices) {
                    let at = (view * n + i) * d;
                    values[at..at + d].copy_from_slice(row);
                    present[i] = true;
                }
                bar.inc(batch.indices.len() as u64);
            }
            skipped.record(epoch.skipped());
        }
        bar.finish_and_clear();
        let features = Tensor::from_data(TensorData::new(values, [views * n, d]), device);
        Ok((
            Self {
                features,
                present,
                views,
            },
            skipped,
        ))
    }
}

/// burn-train's training data from a [`FeatureCache`]: each epoch's batches hold the cached
/// features of the images the training loader would have given, in the same order, as
/// `images` of shape `[n, D, 1, 1]` (the model reads them back as features).
#[derive(Clone)]
pub struct FeatureLoader<B: Backend> {
    order: Loader,
    labels: Vec<i64>,
    cache: FeatureCache<B>,
    device: B::Device,
    cursor: EpochCursor,
    devices: usize,
}

impl<B: Backend> FeatureLoader<B> {
    /// Batches of `cache` in the order the training loader of `items` with `config` uses.
    pub fn new(
        dataset: &str,
        items: Vec<Item>,
        config: LoaderConfig,
        cache: FeatureCache<B>,
        device: B::Device,
    ) -> Self {
        let labels = items.iter().map(|item| item.label as i64).collect();
        Self {
            order: Loader::new(dataset, items, config),
            labels,
            cache,
            device,
            cursor: EpochCursor::default(),
            devices: 1,
        }
    }

    /// The loader of a run whose steps are split across `devices` devices: burn-train's `slice`
    /// then gives each device its part of every batch.
    pub fn split_across(mut self, devices: usize) -> Self {
        self.devices = devices.max(1);
        self
    }

    /// Where the next epoch starts (moved by a resumed run).
    pub fn cursor(&self) -> &EpochCursor {
        &self.cursor
    }

    /// This loader's part of each batch of `epoch` from batch `first` on, without the images
    /// that have no features.
    fn batches(&self, epoch: u64, first: usize) -> Vec<PlannedBatch> {
        self.order
            .plan(epoch)
            .into_iter()
            .skip(first)
            .map(|mut batch| {
                batch.indices.retain(|&i| self.cache.present[i]);
                batch
            })
            .filter(|batch| !batch.indices.is_empty())
            .collect()
    }
}

struct FeatureEpoch<B: Backend> {
    batches: std::vec::IntoIter<PlannedBatch>,
    view: usize,
    loader_items: usize,
    processed: usize,
    total: usize,
    features: Tensor<B, 2>,
    labels: Vec<i64>,
    device: B::Device,
}

impl<B: Backend> Iterator for FeatureEpoch<B> {
    type Item = ImageBatch<B>;

    fn next(&mut self) -> Option<ImageBatch<B>> {
        let PlannedBatch { indices, share } = self.batches.next()?;
        let n = self.loader_items;
        let rows: Vec<i64> = indices
            .iter()
            .map(|&i| (self.view * n + i) as i64)
            .collect();
        let count = indices.len();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [count]), &self.device);
        let f = self.features.clone().select(0, rows);
        let d = f.dims()[1];
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        self.processed += count;
        Some(ImageBatch {
            images: f.reshape([count, d, 1, 1]),
            labels: Tensor::from_data(TensorData::new(labels, [count]), &self.device),
            indices,
            share,
        })
    }
}

impl<B: Backend> DataLoaderIterator<ImageBatch<B>> for FeatureEpoch<B> {
    fn progress(&self) -> Progress {
        Progress {
            items_processed: self.processed,
            items_total: self.total,
        }
    }
}

impl<B: Backend> DataLoader<B, ImageBatch<B>> for FeatureLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch<B>> + 'a> {
        let (epoch, first) = self.cursor.advance();
        Box::new(FeatureEpoch {
            batches: self.batches(epoch, first).into_iter(),
            view: (epoch % self.cache.views.max(1) as u64) as usize,
            loader_items: self.labels.len(),
            processed: self.order.images_before(first),
            total: self.order.images_before(usize::MAX),
            features: self.cache.features.clone(),
            labels: self.labels.clone(),
            device: self.device.clone(),
        })
    }

    fn num_items(&self) -> usize {
        self.labels.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        let cache = FeatureCache {
            features: self.cache.features.clone().to_device(device),
            ..self.cache.clone()
        };
        Arc::new(Self {
            cache,
            device: device.clone(),
            ..self.clone()
        })
    }

    /// One device's loader: its part of every batch, as for [`crate::data::EpochLoader`].
    fn slice(&self, start: usize, _end: usize) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        let part = device_part(start, self.labels.len(), self.devices);
        Arc::new(Self {
            order: self.order.clone().with_part(part),
            cursor: self.cursor.detached(),
            ..self.clone()
        })
    }
}
