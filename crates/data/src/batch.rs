//! Batches for Burn: decoded, transformed images stacked into a `[N, 3, S, S]` tensor with their
//! labels, and the Burn [`Batcher`] that builds them, so that Burn's data-loading machinery and this
//! crate's own [`crate::Loader`] produce the same thing.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// One transformed image, ready to be batched.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// `3 * size * size` floats, channels first, CLIP-normalised.
    pub pixels: Vec<f32>,
    /// Class label.
    pub label: usize,
    /// Position of the image in the item list it came from.
    pub index: usize,
}

/// A batch on the host, before it is moved to a device: what loader workers produce.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBatch {
    /// `n * 3 * size * size` floats.
    pub pixels: Vec<f32>,
    /// Labels, one per image.
    pub labels: Vec<i64>,
    /// Item-list positions, one per image.
    pub indices: Vec<usize>,
    /// Image side length.
    pub size: usize,
    /// The fraction of its training step's images this batch holds: 1, unless the step is split
    /// across devices (see [`ImageBatch::share`]).
    pub share: f32,
}

impl CpuBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Stacks items (each `3 * size * size` floats).
    pub fn from_items(items: Vec<ImageItem>, size: usize) -> CpuBatch {
        let per = 3 * size * size;
        let mut pixels = Vec::with_capacity(items.len() * per);
        let mut labels = Vec::with_capacity(items.len());
        let mut indices = Vec::with_capacity(items.len());
        for item in items {
            assert_eq!(
                item.pixels.len(),
                per,
                "image {} is not 3x{size}x{size}",
                item.index
            );
            pixels.extend_from_slice(&item.pixels);
            labels.push(item.label as i64);
            indices.push(item.index);
        }
        CpuBatch {
            pixels,
            labels,
            indices,
            size,
            share: 1.0,
        }
    }

    /// Moves the batch onto `device`.
    pub fn to_device<B: Backend>(self, device: &B::Device) -> ImageBatch<B> {
        let n = self.labels.len();
        let images = Tensor::from_data(
            TensorData::new(self.pixels, [n, 3, self.size, self.size]),
            device,
        );
        let labels = Tensor::from_data(TensorData::new(self.labels, [n]), device);
        ImageBatch {
            images,
            labels,
            indices: self.indices,
            share: self.share,
        }
    }
}

/// A batch on a device.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// `[N, 3, S, S]`, CLIP-normalised.
    pub images: Tensor<B, 4>,
    /// `[N]` class labels.
    pub labels: Tensor<B, 1, Int>,
    /// Position of each image in the item list (to find its path, or to report per image).
    pub indices: Vec<usize>,
    /// The fraction of its training step's images this batch holds: 1, unless the step's batch is
    /// split across devices, whose losses are then weighted by their shares so that the summed
    /// gradients are those of the whole batch.
    pub share: f32,
}

/// Burn's batcher for [`ImageItem`]s of side length `size`.
#[derive(Debug, Clone, Copy)]
pub struct ImageBatcher {
    /// Image side length.
    pub size: usize,
}

impl<B: Backend> Batcher<B, ImageItem, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &B::Device) -> ImageBatch<B> {
        CpuBatch::from_items(items, self.size).to_device(device)
    }
}
