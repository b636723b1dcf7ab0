//! Multi-head attention, `softmax(q kᵀ / √d) v` per head, straight from the packed input
//! projection `qkv` (`[batch, seq, 3·width]`: q, k and v side by side, each with its heads side by
//! side), as `[batch, seq, width]` with the heads side by side, the layout the output projection
//! reads; `causal`: a query sees no later key. Forward and backward, one sequence per rayon task.
//!
//! Burn's operations would copy q, k and v into head-major order, hold every head's `[seq, seq]`
//! scores at once and copy the result back into sequence-major order. Here each head's products
//! read q, k and v where they lie (gemm takes strides) and write the result where it belongs,
//! and its scores stay in one buffer small enough for the cache.

use gemm::Parallelism;
use rayon::prelude::*;

use super::wide::{softmax_grad_rows, softmax_rows};

/// The attention of every head of every sequence: `qkv` is `[batch, seq, 3·width]` (`dims`), the
/// result `[batch, seq, width]`.
pub(crate) fn attention_values(
    qkv: &[f32],
    [batch, seq, packed]: [usize; 3],
    heads: usize,
    causal: bool,
) -> Vec<f32> {
    let head = Head::new(seq, packed, heads, causal);
    let mut out = vec![0.0f32; batch * seq * head.width];
    out.par_chunks_mut(seq * head.width)
        .zip(qkv.par_chunks(seq * packed))
        .for_each(|(out, qkv)| {
            let mut scores = vec![0.0f32; seq * seq];
            for h in 0..heads {
                head.attend(h, qkv, out, &mut scores);
            }
        });
    out
}

/// The gradient of [`attention_values`]' input `qkv` from that of its output, `grads`
/// (`[batch, seq, width]`). Each head's probabilities are computed again rather than kept from
/// the forward pass: `[seq, seq]` per head and sequence is more memory than the input.
pub(crate) fn attention_grads(
    qkv: &[f32],
    grads: &[f32],
    [batch, seq, packed]: [usize; 3],
    heads: usize,
    causal: bool,
) -> Vec<f32> {
    let head = Head::new(seq, packed, heads, causal);
    let mut qkv_grads = vec![0.0f32; batch * seq * packed];
    qkv_grads
        .par_chunks_mut(seq * packed)
        .zip(qkv.par_chunks(seq * packed))
        .zip(grads.par_chunks(seq * head.width))
        .for_each(|((qkv_grads, qkv), grads)| {
            let mut probs = vec![0.0f32; seq * seq];
            let mut prob_grads = vec![0.0f32; seq * seq];
            for h in 0..heads {
                head.attend_backward(h, qkv, grads, qkv_grads, [&mut probs, &mut prob_grads]);
            }
        });
    qkv_grads
}

/// The geometry of one head's attention over one sequence, for [`attention_values`] and
/// [`attention_grads`].
struct Head {
    seq: usize,
    width: usize,
    dim: usize,
    causal: bool,
}

/// One head's q, k and v columns of a sequence's packed projection (`[seq, 3·width]`), each
/// from its first row on.
struct Columns<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Head {
    /// The heads of `[seq, packed]` projections (`packed` = 3·width) with `heads` heads.
    fn new(seq: usize, packed: usize, heads: usize, causal: bool) -> Self {
        let width = packed / 3;
        Self {
            seq,
            width,
            dim: width / heads,
            causal,
        }
    }

    /// The inverse square root of the head dimension, by which q kᵀ is scaled.
    fn scale(&self) -> f32 {
        (self.dim as f32).powf(-0.5)
    }

    /// Checks that the buffers of one sequence have this geometry for head `h`: `packed`
    /// (`[seq, 3·width]`), `rows` (`[seq, width]`) and each of `squares` (`[seq, seq]`). The
    /// products' safety rests on it.
    fn check(&self, h: usize, packed: usize, rows: usize, squares: &[usize]) {
        let Self {
            seq, width, dim, ..
        } = *self;
        assert!(
            packed == seq * 3 * width
                && rows == seq * width
                && squares.iter().all(|&len| len == seq * seq)
                && (h + 1) * dim <= width,
            "attention buffers do not match the head geometry"
        );
    }

    /// Head `h`'s q, k and v columns, starting at the first row of `packed`.
    fn columns<'a>(&self, h: usize, packed: &'a [f32]) -> Columns<'a> {
        let column = h * self.dim;
        Columns {
            q: &packed[column..],
            k: &packed[self.width + column..],
            v: &packed[2 * self.width + column..],
        }
    }

    /// The rows of a matrix that starts at `values` with rows `row` apart.
    fn rows(values: &[f32], row: usize) -> Strided {
        Strided {
            start: values.as_ptr(),
            row: row as isize,
            column: 1,
        }
    }

    /// The transpose of the matrix whose rows start at `values`, `row` apart.
    fn transposed(values: &[f32], row: usize) -> Strided {
        Strided {
            start: values.as_ptr(),
            row: 1,
            column: row as isize,
        }
    }

    /// `probs` (`[seq, seq]`) becomes head `h`'s attention probabilities, `softmax(q kᵀ / √d)`.
    ///
    /// # Safety
    /// [`Self::check`] holds for `qkv` and `probs`.
    unsafe fn probabilities(&self, h: usize, qkv: &[f32], probs: &mut [f32]) {
        let (seq, packed) = (self.seq, 3 * self.width);
        let Columns { q, k, .. } = self.columns(h, qkv);
        // SAFETY: a product reads rows r < seq and columns c < dim (or seq) of each matrix. By
        // the check, the furthest element of q, k or v lies at
        // (seq - 1)·3·width + 2·width + (h + 1)·dim - 1 < seq·3·width, and of `probs` at
        // seq² - 1: inside their slices. `probs` is a `&mut` slice, so it overlaps neither input.
        unsafe {
            product(
                [seq, seq, self.dim],
                (probs.as_mut_ptr(), seq),
                Self::rows(q, packed),
                Self::transposed(k, packed),
                1.0,
            );
        }
        softmax_rows(probs, seq, self.scale(), self.causal);
    }

    /// Head `h` of one sequence: reads its q, k and v columns of `qkv` (`[seq, 3·width]`) and
    /// writes its columns of `out` (`[seq, width]`); `scores` (`[seq, seq]`) is scratch.
    fn attend(&self, h: usize, qkv: &[f32], out: &mut [f32], scores: &mut [f32]) {
        self.check(h, qkv.len(), out.len(), &[scores.len()]);
        let (seq, packed) = (self.seq, 3 * self.width);
        // SAFETY: checked just above; for `out`, the furthest element written lies at
        // (seq - 1)·width + (h + 1)·dim - 1 < seq·width, and it is a `&mut` slice.
        unsafe {
            self.probabilities(h, qkv, scores);
            // out = probs v.
            product(
                [seq, self.dim, seq],
                (out[h * self.dim..].as_mut_ptr(), self.width),
                Self::rows(scores, seq),
                Self::rows(self.columns(h, qkv).v, packed),
                1.0,
            );
        }
    }

    /// The backward pass of [`Self::attend`] for head `h`: from the gradient of its output
    /// columns in `grads` (`[seq, width]`), writes the gradients of its q, k and v columns of
    /// `qkv_grads` (`[seq, 3·width]`); `probs` and `prob_grads` (`[seq, seq]` each) are scratch.
    ///
    /// With P = softmax(s), s = q kᵀ / √d and G the output's gradient: v's gradient is Pᵀ G;
    /// P's is dP = G vᵀ; s's is, row by row, dS = P ⊙ (dP − ⟨P, dP⟩); q's is dS k / √d, and k's
    /// dSᵀ q / √d.
    fn attend_backward(
        &self,
        h: usize,
        qkv: &[f32],
        grads: &[f32],
        qkv_grads: &mut [f32],
        [probs, prob_grads]: [&mut [f32]; 2],
    ) {
        self.check(h, qkv.len(), grads.len(), &[probs.len(), prob_grads.len()]);
        assert_eq!(
            qkv_grads.len(),
            qkv.len(),
            "one gradient per projection value"
        );
        let (seq, dim, width, packed) = (self.seq, self.dim, self.width, 3 * self.width);
        let Columns { q, k, v } = self.columns(h, qkv);
        let out_grads = &grads[h * dim..];
        let column = h * dim;
        // SAFETY: checked just above, with `qkv_grads` as long as `qkv`; every output is a
        // `&mut` slice or lies in one, so it overlaps no input, and the three gradients of q, k
        // and v are disjoint columns of `qkv_grads`.
        unsafe {
            self.probabilities(h, qkv, probs);
            // One pointer for the three outputs: a reborrow of the slice for each would end the
            // earlier ones' validity.
            let first = qkv_grads.as_mut_ptr().add(column);
            let (q_grads, k_grads, v_grads) = (first, first.add(width), first.add(2 * width));
            product(
                [seq, dim, seq],
                (v_grads, packed),
                Self::transposed(probs, seq),
                Self::rows(out_grads, width),
                1.0,
            );
            product(
                [seq, seq, dim],
                (prob_grads.as_mut_ptr(), seq),
                Self::rows(out_grads, width),
                Self::transposed(v, packed),
                1.0,
            );
            softmax_grad_rows(probs, prob_grads, seq);
            product(
                [seq, dim, seq],
                (q_grads, packed),
                Self::rows(prob_grads, seq),
                Self::rows(k, packed),
                self.scale(),
            );
            product(
                [seq, dim, seq],
                (k_grads, packed),
                Self::transposed(prob_grads, seq),
                Self::rows(q, packed),
                self.scale(),
            );
        }
    }
}

/// A matrix read in place: its first element and the steps between its rows and its columns.
#[derive(Clone, Copy)]
struct Strided {
    start: *const f32,
    row: isize,
    column: isize,
}

/// `out = scale · lhs · rhs` on this thread, for `[m, n, k]`: an `[m, k]` lhs, a `[k, n]` rhs
/// and an `[m, n]` output given as its first element and the step between its rows.
///
/// # Safety
/// Every element of each matrix lies inside a live allocation, and the output overlaps neither
/// input.
unsafe fn product(
    [m, n, k]: [usize; 3],
    (out, out_row): (*mut f32, usize),
    lhs: Strided,
    rhs: Strided,
    scale: f32,
) {
    let out_row = out_row as isize;
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            out_row,
            false,
            lhs.start,
            lhs.column,
            lhs.row,
            rhs.start,
            rhs.column,
            rhs.row,
            0.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}
