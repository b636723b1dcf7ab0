//! mocoop-data's epoch loader as a burn-train `DataLoader`: each call to `iter` is the next epoch
//! (its shuffle and augmentation seeded by `(seed, epoch, index)`); a data error ends the epoch
//! and is kept in the loader's [`DataErrors`], where the training loop finds it and stops.
//!
//! Split across devices, each device's loader yields its [`BatchPart`] of every batch: burn-train
//! asks for them with `slice`, which here names a part, not a range of items.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;

use mocoop_data::{BatchPart, EpochIter, ImageBatch, Item, Loader, LoaderConfig};

/// Epochs of a [`Loader`] for burn-train.
#[derive(Clone)]
pub struct EpochLoader<B: Backend> {
    loader: Loader,
    device: B::Device,
    cursor: EpochCursor,
    devices: usize,
    errors: DataErrors,
    skipped: SkippedImages,
}

/// The first data error of one or more loaders, shared between them and the training loop,
/// which stops at it.
#[derive(Debug, Clone, Default)]
pub struct DataErrors(Arc<Mutex<Option<String>>>);

impl DataErrors {
    /// The first error recorded, if any.
    pub fn first(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records `message` unless an error came first.
    fn record(&self, message: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(message);
    }
}

/// Which epoch a training loader's next `iter` call yields, and from which of its batches: every
/// clone of the loader shares it, and a resumed run starts it in the middle of an epoch.
#[derive(Debug, Clone, Default)]
pub struct EpochCursor {
    epoch: Arc<AtomicU64>,
    first_batch: Arc<AtomicUsize>,
}

impl EpochCursor {
    /// Makes the next epoch the 0-based `epoch`, starting at its batch `first` (later epochs are
    /// whole).
    pub fn start_at(&self, epoch: u64, first: usize) {
        self.epoch.store(epoch, Ordering::SeqCst);
        self.first_batch.store(first, Ordering::SeqCst);
    }

    /// The epoch and first batch of this `iter` call; moves on to the next whole epoch.
    pub fn advance(&self) -> (u64, usize) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        (epoch, self.first_batch.swap(0, Ordering::SeqCst))
    }

    /// A cursor of its own at the same place (for one device's part of the loader).
    pub fn detached(&self) -> Self {
        Self {
            epoch: Arc::new(AtomicU64::new(self.epoch.load(Ordering::SeqCst))),
            first_batch: Arc::new(AtomicUsize::new(self.first_batch.load(Ordering::SeqCst))),
        }
    }
}

/// The part of every batch that burn-train asks for with `slice(start, _)` when it splits the
/// training data across `devices` devices: it cuts the `items` items into ranges of
/// `items / devices` (the last one longer), in device order.
pub(crate) fn device_part(start: usize, items: usize, devices: usize) -> BatchPart {
    let devices = devices.max(1);
    let step = (items / devices).max(1);
    BatchPart {
        index: (start / step).min(devices - 1),
        count: devices,
    }
}

/// Images left out because they could not be read (only with `skip_bad_images`), by path, shared
/// between a loader and whoever reports on the run.
#[derive(Debug, Clone, Default)]
pub struct SkippedImages(Arc<Mutex<BTreeMap<PathBuf, String>>>);

impl SkippedImages {
    /// Every skipped file with the reason, sorted by path.
    pub fn list(&self) -> Vec<(PathBuf, String)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(p, m)| (p.clone(), m.clone())).collect()
    }

    /// Adds images left out by a loader.
    pub(crate) fn record(&self, images: &[mocoop_data::BadImage]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for image in images {
            map.insert(image.path.clone(), image.message.clone());
        }
    }
}

impl<B: Backend> EpochLoader<B> {
    /// Batches of `items` on `device`; a data error is recorded in `errors`.
    pub fn new(
        dataset: &str,
        items: Vec<Item>,
        config: LoaderConfig,
        device: B::Device,
        errors: DataErrors,
    ) -> Self {
        Self {
            loader: Loader::new(dataset, items, config),
            device,
            cursor: EpochCursor::default(),
            devices: 1,
            errors,
            skipped: SkippedImages::default(),
        }
    }

    /// The loader of a run whose steps are split across `devices` devices: burn-train's `slice`
    /// then gives each device its [`BatchPart`] of every batch.
    pub fn split_across(mut self, devices: usize) -> Self {
        self.devices = devices.max(1);
        self
    }

    /// The images this loader has skipped so far (shared: stays valid after the loader moves).
    pub fn skipped(&self) -> SkippedImages {
        self.skipped.clone()
    }

    /// Where the next epoch starts (moved by a resumed run).
    pub fn cursor(&self) -> &EpochCursor {
        &self.cursor
    }
}

struct EpochIterator<B: Backend> {
    inner: EpochIter<B>,
    processed: usize,
    total: usize,
    errors: DataErrors,
    skipped: SkippedImages,
}

impl<B: Backend> Iterator for EpochIterator<B> {
    type Item = ImageBatch<B>;

    fn next(&mut self) -> Option<ImageBatch<B>> {
        let Some(next) = self.inner.next() else {
            self.skipped.record(self.inner.skipped());
            return None;
        };
        match next {
            Ok(batch) => {
                self.processed += batch.indices.len();
                Some(batch)
            }
            Err(e) => {
                self.errors.record(e.to_string());
                None
            }
        }
    }
}

impl<B: Backend> DataLoaderIterator<ImageBatch<B>> for EpochIterator<B> {
    fn progress(&self) -> Progress {
        Progress {
            items_processed: self.processed,
            items_total: self.total,
        }
    }
}

impl<B: Backend> DataLoader<B, ImageBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch<B>> + 'a> {
        let (epoch, first) = self.cursor.advance();
        Box::new(EpochIterator {
            inner: self.loader.epoch_from::<B>(epoch, first, &self.device),
            processed: self.loader.images_before(first),
            total: self.loader.images_before(usize::MAX),
            errors: self.errors.clone(),
            skipped: self.skipped.clone(),
        })
    }

    fn num_items(&self) -> usize {
        self.loader.items().len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        Arc::new(Self {
            device: device.clone(),
            ..self.clone()
        })
    }

    /// One device's loader, when burn-train splits a run across the devices given to
    /// [`Self::split_across`]: every batch of the epoch, cut to that device's part, from where
    /// this loader's cursor stands (a resumed run), with a cursor of its own.
    fn slice(&self, start: usize, _end: usize) -> Arc<dyn DataLoader<B, ImageBatch<B>>> {
        let part = device_part(start, self.loader.items().len(), self.devices);
        Arc::new(Self {
            loader: self.loader.clone().with_part(part),
            cursor: self.cursor.detached(),
            ..self.clone()
        })
    }
}
