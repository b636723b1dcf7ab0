//! A training step's text side split by class across devices.
//!
//! At ImageNet scale a step encodes `E × C` prompts (20,000 for 20 experts and 1,000 classes) and
//! only a batch of images, so the text encoder is where the time goes. Splitting the batch across
//! devices (data parallel) would have every device encode all of them; splitting the prompts
//! gives each device a share of the rows instead. A [`TextShard`] holds one device's share: the
//! fixed part of its rows and a copy of the frozen text encoder, both built once. Each step sends
//! the context table (a few KB) there and brings the rows' features back; the gradients travel the
//! same way in reverse, so the contexts train as on one device.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::buckets::encode_rows;
use super::pool::ClassPrompts;
use crate::clip::TextEncoder;

/// Rows `start..start + len` of a [`ClassPrompts`] with a copy of the frozen text encoder, on one
/// device: that device's share of the text side (see
/// [`super::MixtureOfPrompts::text_features_sharded`]).
#[derive(Module, Debug)]
pub struct TextShard<B: Backend> {
    /// The frozen text encoder, copied to this device.
    text: TextEncoder<B>,
    /// The fixed part of the rows, `[len, context, width]`.
    fixed: Tensor<B, 3>,
    /// Where the rows' context vectors go, `[len, context]`.
    ctx_index: Tensor<B, 2, Int>,
    /// The rows' EOT positions.
    #[module(skip)]
    eot: Vec<usize>,
    /// The first row, among all of the prompts' rows.
    #[module(skip)]
    start: usize,
}

impl<B: Backend> TextShard<B> {
    /// Copies rows `start..start + len` of `prompts`, and `text` (which must be frozen: a copy
    /// trains nothing), to `device`.
    pub fn new(
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        start: usize,
        len: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            text: text.clone().fork(device),
            fixed: prompts
                .fixed
                .clone()
                .narrow(0, start, len)
                .to_device(device),
            ctx_index: prompts
                .ctx_index
                .clone()
                .narrow(0, start, len)
                .to_device(device),
            eot: prompts.eot[start..start + len].to_vec(),
            start,
        }
    }

    /// The shards of `devices[1..]` when `prompts`' rows are split evenly over `devices` in order
    /// (the first device keeps the first rows and needs no shard). With fewer rows than devices,
    /// the devices after the first `rows` get none.
    pub fn split(
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        devices: &[B::Device],
    ) -> Vec<Self> {
        let rows = prompts.rows();
        let n = devices.len().clamp(1, rows.max(1));
        let bound = |i: usize| i * rows / n;
        (1..n)
            .map(|i| {
                Self::new(
                    text,
                    prompts,
                    bound(i),
                    bound(i + 1) - bound(i),
                    &devices[i],
                )
            })
            .collect()
    }

    /// The first of this shard's rows among all rows.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The unnormalised text features `[len, D]` of the shard's rows, on the shard's device, with
    /// the contexts from `table` (moved there, so gradients flow back to it).
    pub fn encode(&self, table: Tensor<B, 2>) -> Tensor<B, 2> {
        let table = table.to_device(&self.fixed.device());
        encode_rows(
            &self.text,
            &self.fixed,
            &self.ctx_index,
            &self.eot,
            table,
            usize::MAX,
        )
    }
}
