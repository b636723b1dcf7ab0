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
use crate::clip::{DeepPrompts, TextEncoder};

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

    /// The shards of `devices[1..]` when `prompts`' rows are split over `devices` in order (the
    /// first device keeps the first rows and needs no shard), in shares of about equal work: the
    /// tokens the rows are encoded with (up to their EOT), since the experts' templates differ in
    /// length. With fewer rows than devices, the devices after the first `rows` get none.
    pub fn split(
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        devices: &[B::Device],
    ) -> Vec<Self> {
        let bounds = balanced_bounds(&prompts.eot, devices.len());
        bounds
            .windows(2)
            .zip(devices)
            .skip(1)
            .map(|(share, device)| Self::new(text, prompts, share[0], share[1] - share[0], device))
            .collect()
    }

    /// The first of this shard's rows among all rows.
    pub fn start(&self) -> usize {
        self.start
    }

    /// How many rows this shard holds.
    pub fn rows(&self) -> usize {
        self.eot.len()
    }

    /// How many of all `rows` rows the first device keeps when the other devices hold `shards`:
    /// those before the first shard (all of them when there is none).
    pub fn first_device_rows(shards: &[Self], rows: usize) -> usize {
        shards.first().map_or(rows, Self::start)
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
            &DeepPrompts::none(),
            usize::MAX,
        )
    }
}

/// Where `parts` shares of rows with EOT positions `eot` start, and the end: `[0, …, rows]`, each
/// share non-empty and holding about the same number of tokens (at most `rows` shares).
fn balanced_bounds(eot: &[usize], parts: usize) -> Vec<usize> {
    let rows = eot.len();
    let n = parts.clamp(1, rows.max(1));
    // Tokens of rows 0..r.
    let mut cost = vec![0];
    for &e in eot {
        cost.push(cost.last().copied().unwrap_or(0) + e + 1);
    }
    let total = cost[rows];
    let mut bounds = vec![0];
    for i in 1..n {
        let at = cost.partition_point(|&c| c * n < i * total);
        // At least one row for this share and for each later one.
        bounds.push(at.clamp(bounds[i - 1] + 1, rows - (n - i)));
    }
    bounds.push(rows);
    bounds
}

#[cfg(test)]
mod tests {
    use super::balanced_bounds;

    #[test]
    fn shares_hold_about_equal_tokens_and_at_least_one_row() {
        // 10 rows of 30 tokens, then 40 of 10: two shares of 350 tokens, not of 25 rows.
        let eot: Vec<usize> = (0..50).map(|r| if r < 10 { 29 } else { 9 }).collect();
        assert_eq!(balanced_bounds(&eot, 2), vec![0, 15, 50]);
        assert_eq!(balanced_bounds(&[5; 12], 3), vec![0, 4, 8, 12]);
        // More devices than rows: one row each for the first rows' worth of devices.
        assert_eq!(balanced_bounds(&[5, 50, 5], 7), vec![0, 1, 2, 3]);
        assert_eq!(balanced_bounds(&[5; 4], 1), vec![0, 4]);
        // One row far longer than the rest still leaves every share a row.
        let bounds = balanced_bounds(&[500, 1, 1, 1], 3);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert_eq!((bounds[0], bounds[3]), (0, 4));
    }
}
