//! The linear layers' matrix products on the host: `out += lhs · rhs` over row-major rows of
//! sequences, in chunks of whole sequences on rayon's threads, each chunk followed at once by what
//! comes after its product (an activation), while its rows are still in cache.

use gemm::Parallelism;
use rayon::prelude::*;

/// How many rows each product takes at once, for sequences of `seq` positions: whole sequences,
/// as few as make at least [`MIN_ROWS`] rows. A product packs the weight into the kernel's layout
/// first; per image sequence (197 positions for ViT-B/16) that is a small part of the work and
/// the rows stay in cache for what follows, while per prompt (a dozen positions, cut after its
/// EOT) the packing would be a large part of it.
fn chunk_rows(seq: usize) -> usize {
    let seq = seq.max(1);
    seq * MIN_ROWS.div_ceil(seq)
}

/// The fewest rows one product of [`chunk_rows`] takes.
const MIN_ROWS: usize = 128;

/// `out += lhs · rhs`, `lhs` and `out` being row-major rows of sequences of `seq` positions, in
/// products of [`chunk_rows`] rows on rayon's threads, with `then` run on each chunk of `out`
/// right after its product, while it is in cache.
pub(crate) fn products(
    out: &mut [f32],
    lhs: &[f32],
    rhs: Rhs,
    seq: usize,
    then: impl Fn(&mut [f32]) + Sync,
) {
    let [k, n] = rhs.shape;
    assert!(
        rhs.values.len() >= k * n,
        "the right-hand matrix is {k} x {n}"
    );
    assert_eq!(
        out.len() * k,
        lhs.len() * n,
        "as many output rows as input rows"
    );
    let rows = chunk_rows(seq);
    out.par_chunks_mut((rows * n).max(1))
        .zip(lhs.par_chunks((rows * k).max(1)))
        .for_each(|(out, lhs)| {
            // SAFETY: `lhs` is `[m, k]` and `out` `[m, n]` (checked above), and `rhs` holds a
            // `[k, n]` matrix read through strides within it (its constructors').
            unsafe { accumulate([lhs.len() / k.max(1), n, k], out, lhs, rhs) };
            then(out);
        });
}

/// The right-hand matrix of a product: its values, its shape as read and its strides between
/// rows and columns.
#[derive(Clone, Copy)]
pub(crate) struct Rhs<'a> {
    values: &'a [f32],
    /// `[k, n]`.
    shape: [usize; 2],
    row_stride: isize,
    column_stride: isize,
}

impl<'a> Rhs<'a> {
    /// A row-major `[rows, columns]` matrix.
    pub(crate) fn rows(values: &'a [f32], [rows, columns]: [usize; 2]) -> Self {
        Self {
            values,
            shape: [rows, columns],
            row_stride: columns as isize,
            column_stride: 1,
        }
    }

    /// The transpose of a row-major `[rows, columns]` matrix: `[columns, rows]`.
    pub(crate) fn transposed(values: &'a [f32], [rows, columns]: [usize; 2]) -> Self {
        Self {
            values,
            shape: [columns, rows],
            row_stride: 1,
            column_stride: columns as isize,
        }
    }
}

/// `out += lhs · rhs` for an `[m, k]` lhs, a `[k, n]` rhs and an `[m, n]` out, out and lhs
/// row-major, on this thread.
///
/// # Safety
/// The slices hold at least those many elements, and `rhs`'s strides stay within its values.
unsafe fn accumulate([m, n, k]: [usize; 3], out: &mut [f32], lhs: &[f32], rhs: Rhs) {
    debug_assert!(out.len() >= m * n && lhs.len() >= m * k && rhs.values.len() >= k * n);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.values.as_ptr(),
            rhs.column_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}
