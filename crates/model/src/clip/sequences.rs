//! What the image and text encoders both do to batches of sequences: add the position embedding
//! to every sequence, and pick sequences or rows by host positions.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// `x + positions` for every sequence of `x` (`[batch, seq, width]` plus `[seq, width]`), added
/// as one broadcast row of `seq · width` values: Burn's CPU backend vectorises that broadcast,
/// while a `[1, seq, width]` one goes through its per-element strided walk. The same sums either
/// way.
pub(crate) fn add_positions<B: Backend>(x: Tensor<B, 3>, positions: Tensor<B, 2>) -> Tensor<B, 3> {
    let [batch, seq, width] = x.dims();
    let row = positions.reshape([1, seq * width]);
    (x.reshape([batch, seq * width]) + row).reshape([batch, seq, width])
}

/// An index tensor (for `select`) from host positions.
pub fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}
