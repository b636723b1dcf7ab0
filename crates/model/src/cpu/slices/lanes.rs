//! Reductions over `f32` values that the compiler vectorises: eight interleaved running folds
//! instead of one, since float sums do not reassociate.

/// Folds `values` with `op` in eight interleaved lanes, then folds the lanes: a reduction the
/// compiler vectorises, which a single running fold over floats is not (their sums do not
/// reassociate).
#[inline(always)]
pub(super) fn lanes_fold(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    lanes_fold_mapped(values, init, |_, v| v, op)
}

/// [`lanes_fold`] over `term(i, values[i])`.
#[inline(always)]
pub(super) fn lanes_fold_mapped(
    values: &[f32],
    init: f32,
    term: impl Fn(usize, f32) -> f32,
    op: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut lanes = [init; 8];
    let chunks = values.chunks_exact(8);
    let whole = values.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        for (l, (lane, &v)) in lanes.iter_mut().zip(chunk).enumerate() {
            *lane = op(*lane, term(8 * c + l, v));
        }
    }
    let rest = values[whole..]
        .iter()
        .enumerate()
        .map(|(i, &v)| term(whole + i, v));
    lanes.into_iter().chain(rest).fold(init, op)
}
