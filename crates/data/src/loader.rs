//! The epoch loader: a seeded shuffle, then batches decoded and transformed on worker threads so
//! that the accelerator is not starved. Like PyTorch's `DataLoader`, worker `w` builds batches
//! `w, w + W, w + 2W, …` into its own bounded queue and the consumer takes them round-robin, so
//! batches arrive in order and their contents never depend on the number of workers.
//!
//! A training step split across devices gives each device a loader of one [`BatchPart`] of every
//! batch, so that together they see exactly the batches one device would.
//!
//! A bad image (missing, empty, not an image) stops the epoch with an error naming the dataset and
//! the file, unless [`LoaderConfig::skip_bad_images`] is set; then the image is left out of its
//! batch and reported by [`CpuEpoch::skipped`], never dropped silently.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use rand::seq::SliceRandom;

use mocoop_model::preprocess::Preprocess;

use crate::augment::{TrainTransform, Transform, derived_rng};
use crate::batch::{CpuBatch, ImageBatch};
use crate::dataset::Item;
use crate::error::{DataError, Result};

/// How a [`Loader`] batches, transforms and orders images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Decoding threads; 0 decodes on the calling thread.
    pub workers: usize,
    /// The transform (training augmentation or test preprocessing).
    pub transform: Transform,
    /// Shuffle the order each epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Drop a final incomplete batch.
    pub drop_last: bool,
    /// Seed of the shuffle and the augmentation.
    pub seed: u64,
    /// Leave undecodable images out (and report them) instead of stopping.
    pub skip_bad_images: bool,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training: augmentation at `size`, shuffled, incomplete last batch kept (as Dassl does for
    /// few-shot training), two workers.
    pub fn train(size: u32, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            workers: 2,
            transform: Transform::Train(TrainTransform::new(size)),
            shuffle: true,
            drop_last: false,
            seed,
            skip_bad_images: false,
            prefetch: 2,
        }
    }

    /// The same loading with a checkpoint's transform (see [`Transform::with_preprocess`]).
    pub fn with_preprocess(self, preprocess: Preprocess) -> Self {
        Self {
            transform: self.transform.with_preprocess(preprocess),
            ..self
        }
    }

    /// Evaluation: resize + centre crop at `size`, in order, two workers.
    pub fn test(size: u32, batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            workers: 2,
            transform: Transform::Test(size, Preprocess::default()),
            shuffle: false,
            drop_last: false,
            seed: 0,
            skip_bad_images: false,
            prefetch: 2,
        }
    }
}

/// An image that was left out because it could not be read ([`LoaderConfig::skip_bad_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadImage {
    /// Position in the item list.
    pub index: usize,
    /// The file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub message: String,
}

/// Which part of every batch a loader yields: part `index` of `count` contiguous parts whose
/// sizes differ by at most one (the first ones larger). Data-parallel training gives one part to
/// each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPart {
    /// This part, `0..count`.
    pub index: usize,
    /// Parts per batch.
    pub count: usize,
}

impl BatchPart {
    /// The whole batch (one device).
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// The positions of this part within a batch of `len` images.
    pub fn range(&self, len: usize) -> Range<usize> {
        let count = self.count.max(1);
        let (base, rem) = (len / count, len % count);
        let start = self.index * base + self.index.min(rem);
        start..start + base + usize::from(self.index < rem)
    }
}

/// One batch of an epoch as planned before decoding: item positions and the fraction of the whole
/// batch they are (1 unless the loader yields a [`BatchPart`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedBatch {
    /// Positions in the item list.
    pub indices: Vec<usize>,
    /// `indices.len()` over the size of the whole batch.
    pub share: f32,
}

/// Loads one split of a dataset epoch by epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    dataset: Arc<str>,
    items: Arc<[Item]>,
    config: LoaderConfig,
    part: BatchPart,
}

const SHUFFLE_STREAM: u64 = 0x7368_7566;

impl Loader {
    /// A loader over `items` of dataset `dataset` (the name is used in error messages).
    pub fn new(dataset: &str, items: Vec<Item>, config: LoaderConfig) -> Self {
        assert!(config.batch_size > 0, "batch size must be positive");
        Loader {
            dataset: dataset.into(),
            items: items.into(),
            config,
            part: BatchPart::WHOLE,
        }
    }

    /// The same loader yielding only `part` of every batch (the batches, their order and their
    /// augmentation are unchanged).
    pub fn with_part(mut self, part: BatchPart) -> Self {
        assert!(
            part.index < part.count,
            "batch part {part:?} does not exist"
        );
        self.part = part;
        self
    }

    /// How many images this loader yields in the first `batches` batches of an epoch (every batch
    /// but a smaller last one is full).
    pub fn images_before(&self, batches: usize) -> usize {
        let (n, b) = (self.items.len(), self.config.batch_size);
        let batches = batches.min(self.num_batches());
        let full = batches.min(n / b);
        let last = if batches > full { n - full * b } else { 0 };
        full * self.part.range(b).len() + self.part.range(last).len()
    }

    /// The items, in their original order (batch `indices` point into this).
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.items.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of item positions in `epoch`: a seeded shuffle of `0..n`, or `0..n`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut derived_rng(self.config.seed, epoch, 0, SHUFFLE_STREAM));
        }
        order
    }

    /// The batches of `epoch` (this loader's part of each), before decoding.
    pub fn plan(&self, epoch: u64) -> Vec<PlannedBatch> {
        let order = self.order(epoch);
        let mut batches: Vec<&[usize]> = order.chunks(self.config.batch_size).collect();
        if self.config.drop_last
            && batches
                .last()
                .is_some_and(|b| b.len() < self.config.batch_size)
        {
            batches.pop();
        }
        batches
            .into_iter()
            .map(|batch| {
                let indices = batch[self.part.range(batch.len())].to_vec();
                PlannedBatch {
                    share: indices.len() as f32 / batch.len() as f32,
                    indices,
                }
            })
            .collect()
    }

    /// The batches of `epoch` on the host.
    pub fn epoch_cpu(&self, epoch: u64) -> CpuEpoch {
        self.epoch_cpu_from(epoch, 0)
    }

    /// The batches of `epoch` on the host from batch `first` on (a resumed run continues an epoch
    /// with exactly the batches it had not yet seen).
    pub fn epoch_cpu_from(&self, epoch: u64, first: usize) -> CpuEpoch {
        let mut batches = self.plan(epoch);
        batches.drain(..first.min(batches.len()));
        let batches = Arc::new(batches);
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            items: self.items.clone(),
            config: self.config,
            epoch,
        });
        let workers = self.config.workers.min(batches.len());
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.config.prefetch.max(1));
            receivers.push(rx);
            let (job, batches, stop) = (job.clone(), batches.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("mocoop-loader-{w}"))
                .spawn(move || worker(w, workers, &job, &batches, &stop, tx))
                .expect("spawn loader worker");
            handles.push(handle);
        }
        CpuEpoch {
            job,
            batches,
            next: 0,
            receivers,
            handles,
            stop,
            skipped: Vec::new(),
            done: false,
        }
    }

    /// The batches of `epoch` on `device`.
    pub fn epoch<B: Backend>(&self, epoch: u64, device: &B::Device) -> EpochIter<B> {
        self.epoch_from(epoch, 0, device)
    }

    /// The batches of `epoch` on `device` from batch `first` on.
    pub fn epoch_from<B: Backend>(
        &self,
        epoch: u64,
        first: usize,
        device: &B::Device,
    ) -> EpochIter<B> {
        EpochIter {
            inner: self.epoch_cpu_from(epoch, first),
            device: device.clone(),
        }
    }
}

/// What every worker needs to build a batch.
struct Job {
    dataset: Arc<str>,
    items: Arc<[Item]>,
    config: LoaderConfig,
    epoch: u64,
}

type BatchResult = Result<(CpuBatch, Vec<BadImage>)>;

impl Job {
    /// Decodes and transforms the images of `planned` into one host batch.
    fn build(&self, planned: &PlannedBatch) -> BatchResult {
        let indices = &planned.indices;
        let size = self.config.transform.size() as usize;
        let per = 3 * size * size;
        let mut pixels = vec![0f32; indices.len() * per];
        let mut labels = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(indices.len());
        let mut bad = Vec::new();
        for &index in indices {
            let item = &self.items[index];
            match mocoop_model::preprocess::load_rgb(&item.path) {
                Ok(image) => {
                    let slot = kept.len();
                    self.config.transform.apply_into(
                        &image,
                        self.config.seed,
                        self.epoch,
                        index as u64,
                        &mut pixels[slot * per..(slot + 1) * per],
                    );
                    labels.push(item.label as i64);
                    kept.push(index);
                }
                Err(e) if self.config.skip_bad_images => bad.push(BadImage {
                    index,
                    path: item.path.clone(),
                    message: e.message,
                }),
                Err(e) => {
                    return Err(DataError::BadImage {
                        dataset: self.dataset.to_string(),
                        path: item.path.clone(),
                        message: e.message,
                    });
                }
            }
        }
        pixels.truncate(kept.len() * per);
        Ok((
            CpuBatch {
                pixels,
                labels,
                indices: kept,
                size,
                share: planned.share,
            },
            bad,
        ))
    }
}

fn worker(
    w: usize,
    workers: usize,
    job: &Job,
    batches: &[PlannedBatch],
    stop: &AtomicBool,
    tx: SyncSender<BatchResult>,
) {
    for planned in batches.iter().skip(w).step_by(workers) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = job.build(planned);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return; // the consumer is gone, or the epoch ends at this error
        }
    }
}

/// One epoch's host batches, in order. Ends after the first error.
pub struct CpuEpoch {
    job: Arc<Job>,
    batches: Arc<Vec<PlannedBatch>>,
    next: usize,
    receivers: Vec<Receiver<BatchResult>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    skipped: Vec<BadImage>,
    done: bool,
}

impl CpuEpoch {
    /// Images left out so far because they could not be read (only with `skip_bad_images`).
    pub fn skipped(&self) -> &[BadImage] {
        &self.skipped
    }

    /// Batches this epoch will yield at most.
    pub fn num_batches(&self) -> usize {
        self.batches.len()
    }

    fn fetch(&mut self, b: usize) -> BatchResult {
        if self.receivers.is_empty() {
            return self.job.build(&self.batches[b]);
        }
        let w = b % self.receivers.len();
        match self.receivers[w].recv() {
            Ok(result) => result,
            Err(_) => panic!("loader worker {w} stopped without a result (it panicked)"),
        }
    }
}

impl Iterator for CpuEpoch {
    type Item = Result<CpuBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done && self.next < self.batches.len() {
            let b = self.next;
            self.next += 1;
            match self.fetch(b) {
                Ok((batch, bad)) => {
                    self.skipped.extend(bad);
                    if batch.is_empty() {
                        // Every image was bad (and reported), or this is the empty part of a last
                        // batch smaller than the number of parts.
                        continue;
                    }
                    return Some(Ok(batch));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Drop for CpuEpoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// One epoch's batches on a device, in order. Ends after the first error.
pub struct EpochIter<B: Backend> {
    inner: CpuEpoch,
    device: B::Device,
}

impl<B: Backend> EpochIter<B> {
    /// Images left out so far because they could not be read (only with `skip_bad_images`).
    pub fn skipped(&self) -> &[BadImage] {
        self.inner.skipped()
    }

    /// Batches this epoch will yield at most.
    pub fn num_batches(&self) -> usize {
        self.inner.num_batches()
    }
}

impl<B: Backend> Iterator for EpochIter<B> {
    type Item = Result<ImageBatch<B>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|r| r.map(|batch| batch.to_device::<B>(&self.device)))
    }
}
