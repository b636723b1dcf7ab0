//! Encoding prompts in buckets of similar length.
//!
//! The text encoder reads only each prompt's EOT position, and attention is causal, so a batch of
//! prompts can be cut right after its last EOT without changing any feature. One cut for all
//! `E × C` prompts is set by the longest of them; prompts sorted by EOT position and encoded in
//! buckets, each cut after its own last EOT, skip the positions that only the longer prompts need
//! (the experts' templates and the class names differ in length: for ImageNet's 20 templates the
//! mean prompt is about 3/4 of the longest). The features are returned in row order.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::clip::{DeepPrompts, TextEncoder, index_tensor};

/// Rows below which a bucket of one length is merged with the next longer rows: every encoder
/// pass has a fixed cost, which small buckets would pay too often.
const MIN_BUCKET: usize = 32;

/// The rows `0..eot.len()` grouped for encoding: sorted by EOT position (stably), cut where the
/// position grows once a bucket has [`MIN_BUCKET`] rows, and at `chunk` rows.
fn buckets(eot: &[usize], chunk: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..eot.len()).collect();
    order.sort_by_key(|&row| eot[row]);
    let mut out = Vec::new();
    let mut bucket = Vec::new();
    for (k, &row) in order.iter().enumerate() {
        bucket.push(row);
        let longer_next = order.get(k + 1).is_none_or(|&next| eot[next] > eot[row]);
        if bucket.len() >= chunk.max(1) || (longer_next && bucket.len() >= MIN_BUCKET) {
            out.push(std::mem::take(&mut bucket));
        }
    }
    if !bucket.is_empty() {
        out.push(bucket);
    }
    out
}

/// Text-encoder outputs `[rows, D]` (in row order) of the prompts `fixed + embedding(table,
/// ctx_index)` (`[rows, context, width]` and `[rows, context]`) whose EOT tokens sit at `eot`,
/// with the deep prompts `deep` (positions before every EOT, so that every bucket's cut keeps
/// them), encoded in buckets of similar length of at most `chunk` rows.
pub(crate) fn encode_rows<B: Backend>(
    text: &TextEncoder<B>,
    fixed: &Tensor<B, 3>,
    ctx_index: &Tensor<B, 2, Int>,
    eot: &[usize],
    table: Tensor<B, 2>,
    deep: &DeepPrompts<B>,
    chunk: usize,
) -> Tensor<B, 2> {
    let device = fixed.device();
    let groups = buckets(eot, chunk);
    let parts: Vec<Tensor<B, 2>> = groups
        .iter()
        .map(|rows| {
            let eot: Vec<usize> = rows.iter().map(|&row| eot[row]).collect();
            let seq = eot.iter().max().map_or(1, |m| m + 1);
            let fixed = fixed.clone().narrow(1, 0, seq);
            let ctx_index = ctx_index.clone().narrow(1, 0, seq);
            let (fixed, ctx_index) = match contiguous_range(rows) {
                Some((start, len)) => {
                    (fixed.narrow(0, start, len), ctx_index.narrow(0, start, len))
                }
                None => {
                    let index = index_tensor(rows, &device);
                    (fixed.select(0, index.clone()), ctx_index.select(0, index))
                }
            };
            let x = fixed + burn::tensor::module::embedding(table.clone(), ctx_index);
            text.forward_prompted(x, &eot, deep)
        })
        .collect();
    let encoded = Tensor::cat(parts, 0);
    let order: Vec<usize> = groups.into_iter().flatten().collect();
    if order.iter().enumerate().all(|(k, &row)| k == row) {
        return encoded;
    }
    // Row `row` was encoded at position `at[row]`.
    let mut at = vec![0; order.len()];
    for (k, &row) in order.iter().enumerate() {
        at[row] = k;
    }
    encoded.select(0, index_tensor(&at, &device))
}

/// `(start, len)` when `rows` are `start, start + 1, …`.
fn contiguous_range(rows: &[usize]) -> Option<(usize, usize)> {
    let start = *rows.first()?;
    rows.iter()
        .enumerate()
        .all(|(k, &row)| row == start + k)
        .then_some((start, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_group_rows_by_length_and_cover_each_row_once() {
        // 40 short rows, 40 long ones interleaved, 5 of a middle length: the middle ones are too
        // few for a bucket of their own and join the long ones.
        let eot: Vec<usize> = (0..85)
            .map(|row| match row {
                80.. => 9,
                _ if row % 2 == 0 => 5,
                _ => 12,
            })
            .collect();
        let groups = buckets(&eot, usize::MAX);
        let lengths: Vec<Vec<usize>> = groups
            .iter()
            .map(|rows| rows.iter().map(|&row| eot[row]).collect())
            .collect();
        assert_eq!(lengths.len(), 2, "{lengths:?}");
        assert!(lengths[0].iter().all(|&l| l == 5) && lengths[0].len() == 40);
        assert_eq!(lengths[1].len(), 45);
        assert!(lengths[1].windows(2).all(|w| w[0] <= w[1]));
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, (0..85).collect::<Vec<_>>());
        // A chunk size cuts buckets further; one length keeps the rows in order.
        assert!(buckets(&eot, 16).iter().all(|rows| rows.len() <= 16));
        assert_eq!(
            buckets(&[7; 50], usize::MAX),
            vec![(0..50).collect::<Vec<_>>()]
        );
        assert_eq!(contiguous_range(&[3, 4, 5]), Some((3, 3)));
        assert_eq!(contiguous_range(&[3, 5]), None);
    }
}
