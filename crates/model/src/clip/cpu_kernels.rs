//! Fused loops on Burn's CPU backend: the MLP activations, QuickGELU
//! (`x · σ(1.702 x)`, OpenAI's CLIP models) and GELU (open_clip's own models), and multi-head
//! attention from the packed projections.
//!
//! Burn's CPU backend computes exponentials (the C library's `expf`) and erf one element at a
//! time, and each scaling, masking, reduction and product as a pass of its own, and attention
//! copies its heads in and out of head-major order: together about a quarter of an image-encoder
//! forward pass (`perf record` on `mocoop bench --cases encode-image`). Outside autodiff, on f32
//! values, each function here is one pass over the buffer with an exponential the compiler
//! vectorises. Under autodiff (training) the same loops run as operations of their own with
//! backward passes written here too (`cpu_autodiff`); on other backends Burn's own operations
//! run.

use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, activation};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_autodiff;
use super::transformer::cpu_backend;
use crate::config::Activation;

/// The values and device of `x` for a host loop, or `x` back when Burn's operations must run.
fn host_values<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<(TensorData, B::Device), Tensor<B, D>> {
    let device = x.device();
    if cpu_backend::<B>(&device) && !B::ad_enabled(&device) && x.dtype() == DType::F32 {
        Ok((x.into_data(), device))
    } else {
        Err(x)
    }
}

/// The f32 values of host data.
fn f32s(data: &mut TensorData) -> &mut [f32] {
    data.as_mut_slice::<f32>()
        .expect("an f32 tensor holds f32 values")
}

/// QuickGELU's slope.
const SLOPE: f32 = 1.702;

/// `x · σ(1.702 x)`.
pub(crate) fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    elementwise(x, Activation::QuickGelu, |x| {
        x.clone() * activation::sigmoid(x * SLOPE)
    })
}

/// GELU, `x · Φ(x)` with the exact normal CDF (the MLP activation of open_clip's own models,
/// LAION's among them).
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    elementwise(x, Activation::Gelu, activation::gelu)
}

/// The MLP activation `curve` over `x`, on whichever path applies (see [`elementwise`]).
pub(super) fn activate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    curve: Activation,
) -> Tensor<B, D> {
    match curve {
        Activation::QuickGelu => quick_gelu(x),
        Activation::Gelu => gelu(x),
    }
}

/// An elementwise function: `curve` over the values on the host (outside autodiff or as an
/// autodiff operation of its own), or `by_operations` where Burn's operations must run.
fn elementwise<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    curve: Activation,
    by_operations: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    match host_values(x) {
        Ok((mut data, device)) => {
            activate_in_place(curve, f32s(&mut data));
            Tensor::from_data(data, &device)
        }
        Err(x) => match cpu_autodiff::into_cpu_autodiff(x) {
            Ok(x) => cpu_autodiff::from_cpu_autodiff(cpu_autodiff::activate(x, curve)),
            Err(x) => by_operations(x),
        },
    }
}

/// `curve` over `values`, as new values: the forward pass of an activation under autodiff,
/// which keeps its input for the backward pass.
pub(super) fn activated(curve: Activation, values: &[f32]) -> Vec<f32> {
    let mut out = values.to_vec();
    activate_in_place(curve, &mut out);
    out
}

/// `curve` over `values`, in place: the activation fused into a product (`cpu_linear`).
pub(super) fn activate_in_place(curve: Activation, values: &mut [f32]) {
    widest(HostLoop::Activate(curve, values));
}

/// `grads` (of an activation's output) become the gradients of its input `values`: times the
/// curve's derivative there.
pub(super) fn activation_grads(curve: Activation, values: &[f32], grads: &mut [f32]) {
    widest(HostLoop::Derive(curve, values, grads));
}

/// `ln` over the last axis of `x` with epsilon `eps`: as one autodiff operation on the CPU
/// backend under autodiff, through Burn's LayerNorm elsewhere (its CPU backend already fuses the
/// forward pass outside autodiff).
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let Some(beta) = &ln.beta else {
        return ln.forward(x);
    };
    let tracked = (
        cpu_autodiff::into_cpu_autodiff(x),
        cpu_autodiff::into_cpu_autodiff(ln.gamma.val()),
        cpu_autodiff::into_cpu_autodiff(beta.val()),
    );
    match tracked {
        (Ok(x), Ok(gamma), Ok(beta)) => {
            cpu_autodiff::from_cpu_autodiff(cpu_autodiff::layer_norm(x, gamma, beta, eps))
        }
        (x, ..) => ln.forward(x.map_or_else(|x| x, cpu_autodiff::from_cpu_autodiff)),
    }
}

/// The gradients of a LayerNorm's `x`, `gamma` and `beta` from those of its output.
pub(super) struct LayerNormGrads {
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// [`LayerNormGrads`] from the output's gradients `grads`. Per row, with x̂ the normalised
/// values, r the inverse deviation and h = grads · gamma: x's gradient is
/// r (h − mean(h) − x̂ mean(h x̂)); gamma's and beta's are the sums over rows of grads · x̂ and of
/// grads, summed row after row (the same order whatever the thread count).
pub(super) fn layer_norm_grads(
    x: &[f32],
    gamma: &[f32],
    grads: &[f32],
    eps: f32,
) -> LayerNormGrads {
    let width = gamma.len();
    let mut out = LayerNormGrads {
        x: vec![0.0f32; x.len()],
        gamma: vec![0.0f32; width],
        beta: vec![0.0f32; width],
    };
    let (mut normed, mut scaled) = (vec![0.0f32; width], vec![0.0f32; width]);
    let rows = x
        .chunks_exact(width)
        .zip(grads.chunks_exact(width))
        .zip(out.x.chunks_exact_mut(width));
    for ((x, grads), x_grads) in rows {
        let (mean, inverse) = row_moments(x, eps);
        for (((n, s), &x), (&g, &gamma)) in normed
            .iter_mut()
            .zip(scaled.iter_mut())
            .zip(x)
            .zip(grads.iter().zip(gamma))
        {
            *n = (x - mean) * inverse;
            *s = g * gamma;
        }
        let scaled_mean = lanes_fold(&scaled, 0.0, |a, b| a + b) / width as f32;
        let products: f32 = lanes_fold_mapped(&scaled, 0.0, |i, s| s * normed[i], |a, b| a + b);
        let product_mean = products / width as f32;
        for (i, d) in x_grads.iter_mut().enumerate() {
            *d = inverse * (scaled[i] - scaled_mean - normed[i] * product_mean);
        }
        for (i, &g) in grads.iter().enumerate() {
            out.gamma[i] += g * normed[i];
            out.beta[i] += g;
        }
    }
    out
}

/// The mean of `row` and the inverse of its standard deviation with `eps` added to the variance
/// (the mean of squared deviations, as PyTorch's LayerNorm computes it).
fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lanes_fold(row, 0.0, |a, b| a + b) / n;
    let squares = lanes_fold_mapped(row, 0.0, |_, v| (v - mean) * (v - mean), |a, b| a + b);
    (mean, (squares / n + eps).sqrt().recip())
}

/// Multi-head attention, `softmax(q kᵀ / √d) v` per head, straight from the packed input
/// projection `qkv` (`[batch, seq, 3·width]`: q, k and v side by side, each with its heads side by
/// side), as `[batch, seq, width]` with the heads side by side, the layout the output projection
/// reads; `causal`: a query sees no later key. `qkv` comes back when Burn's operations must run.
///
/// Burn's operations would copy q, k and v into head-major order, hold every head's `[seq, seq]`
/// scores at once and copy the result back into sequence-major order. Here each head's products
/// read q, k and v where they lie (gemm takes strides) and write the result where it belongs,
/// and its scores stay in one buffer small enough for the cache.
pub(crate) fn packed_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let dims = qkv.dims();
    match host_values(qkv) {
        Ok((data, device)) => {
            let values = data
                .as_slice::<f32>()
                .expect("an f32 tensor holds f32 values");
            let out = attention_values(values, dims, heads, causal);
            let [batch, seq, packed] = dims;
            Ok(Tensor::from_data(
                TensorData::new(out, [batch, seq, packed / 3]),
                &device,
            ))
        }
        Err(qkv) => match cpu_autodiff::into_cpu_autodiff(qkv) {
            Ok(qkv) => Ok(cpu_autodiff::from_cpu_autodiff(cpu_autodiff::attention(
                qkv, heads, causal,
            ))),
            Err(qkv) => Err(qkv),
        },
    }
}

/// [`packed_attention`] on host values: `qkv` is `[batch, seq, 3·width]` (`dims`), the result
/// `[batch, seq, width]`.
pub(super) fn attention_values(
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
pub(super) fn attention_grads(
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
        widest(HostLoop::SoftmaxRows {
            scores: probs,
            seq,
            scale: self.scale(),
            causal: self.causal,
        });
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
            widest(HostLoop::SoftmaxGradRows {
                probs,
                grads: prob_grads,
                seq,
            });
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

/// One pass of a host loop, as [`widest`] runs it.
enum HostLoop<'a> {
    /// An activation over the values, in place.
    Activate(Activation, &'a mut [f32]),
    /// Softmax over each row of one head's `[seq, seq]` scores at `scale` (`causal`: row `i`
    /// sees keys `..=i`).
    SoftmaxRows {
        scores: &'a mut [f32],
        seq: usize,
        scale: f32,
        causal: bool,
    },
    /// The gradients of an activation's output become those of its input `values`, in place.
    Derive(Activation, &'a [f32], &'a mut [f32]),
    /// The gradients of one head's `[seq, seq]` attention probabilities `probs` become those of
    /// the scores the softmax took (before its scale), in place.
    SoftmaxGradRows {
        probs: &'a [f32],
        grads: &'a mut [f32],
        seq: usize,
    },
}

impl HostLoop<'_> {
    /// The loop, compiled into the caller (so that [`with_avx2`] compiles it for AVX2).
    #[inline(always)]
    fn run(self) {
        match self {
            Self::Activate(Activation::QuickGelu, values) => quick_gelu_in_place(values),
            Self::Activate(Activation::Gelu, values) => gelu_in_place(values),
            Self::SoftmaxRows {
                scores,
                seq,
                scale,
                causal,
            } => {
                for (i, row) in scores.chunks_exact_mut(seq).enumerate() {
                    let visible = if causal { i + 1 } else { seq };
                    softmax_in_place(row, scale, visible);
                }
            }
            Self::Derive(Activation::QuickGelu, values, grads) => quick_gelu_grads(values, grads),
            Self::Derive(Activation::Gelu, values, grads) => gelu_grads(values, grads),
            Self::SoftmaxGradRows { probs, grads, seq } => {
                for (grads, probs) in grads.chunks_exact_mut(seq).zip(probs.chunks_exact(seq)) {
                    softmax_grads(probs, grads);
                }
            }
        }
    }
}

/// Runs `job` compiled for AVX2 where the processor has it: eight lanes wide instead of the four
/// of baseline x86-64 (SSE2). FMA stays off, so the results are the same bits either way.
fn widest(job: HostLoop) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, the only requirement of `with_avx2`.
        return unsafe { with_avx2(job) };
    }
    job.run()
}

/// `job`, compiled with AVX2 enabled (see [`widest`]). Everything it runs is `#[inline(always)]`:
/// a function the compiler did not inline here would run baseline code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn with_avx2(job: HostLoop) {
    job.run()
}

/// `row[..visible]` becomes `softmax(scale · row[..visible])`, the rest zeros.
#[inline(always)]
fn softmax_in_place(row: &mut [f32], scale: f32, visible: usize) {
    let (seen, hidden) = row.split_at_mut(visible);
    let max = lanes_fold(seen, f32::NEG_INFINITY, f32::max);
    seen.iter_mut().for_each(|v| *v = exp(scale * (*v - max)));
    let inverse = lanes_fold(seen, 0.0, |a, b| a + b).recip();
    seen.iter_mut().for_each(|v| *v *= inverse);
    hidden.fill(0.0);
}

/// `grads` of one softmax row `probs` become `probs ⊙ (grads − ⟨probs, grads⟩)`, the gradients
/// of its inputs (a hidden position has probability 0 and gets 0).
#[inline(always)]
fn softmax_grads(probs: &[f32], grads: &mut [f32]) {
    grads.iter_mut().zip(probs).for_each(|(g, p)| *g *= p);
    let dot = lanes_fold(grads, 0.0, |a, b| a + b);
    grads.iter_mut().zip(probs).for_each(|(g, p)| *g -= p * dot);
}

/// Folds `values` with `op` in eight interleaved lanes, then folds the lanes: a reduction the
/// compiler vectorises, which a single running fold over floats is not (their sums do not
/// reassociate).
#[inline(always)]
fn lanes_fold(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    lanes_fold_mapped(values, init, |_, v| v, op)
}

/// [`lanes_fold`] over `term(i, values[i])`.
#[inline(always)]
fn lanes_fold_mapped(
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

/// Applies QuickGELU to each value.
#[inline(always)]
fn quick_gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v /= 1.0 + exp(-SLOPE * *v);
    }
}

/// Multiplies each gradient by QuickGELU's derivative at its value: `s + 1.702 x s (1 - s)`
/// with `s = σ(1.702 x)`.
#[inline(always)]
fn quick_gelu_grads(values: &[f32], grads: &mut [f32]) {
    for (g, &x) in grads.iter_mut().zip(values) {
        let s = 1.0 / (1.0 + exp(-SLOPE * x));
        *g *= s + SLOPE * x * s * (1.0 - s);
    }
}

/// Applies GELU to each value: `x · Φ(x) = x - x · erfc(x / √2) / 2`, with the Chebyshev fit of
/// erfc from Numerical Recipes (`erfc(z) = t · e^{-z² + P(t)}`, `t = 1 / (1 + z / 2)` for
/// `z ≥ 0`, relative error below 1.2e-7). For `x < 0`, `x · Φ(x) = x · erfc(|x| / √2) / 2`
/// directly, so the small values there keep their relative precision; the choice is a select, so
/// the loop vectorises.
#[inline(always)]
fn gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        let tail = x * half_erfc(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
        *v = if x < 0.0 { tail } else { x - tail };
    }
}

/// Multiplies each gradient by GELU's derivative at its value, `Φ(x) + x φ(x)`, with Φ from
/// the fit of [`gelu_in_place`] and the normal density `φ(x) = e^{-x²/2} / √(2π)`.
#[inline(always)]
fn gelu_grads(values: &[f32], grads: &mut [f32]) {
    const INV_SQRT_TAU: f32 = 0.398_942_3;
    for (g, &x) in grads.iter_mut().zip(values) {
        let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let tail = half_erfc(z);
        let cdf = if x < 0.0 { tail } else { 1.0 - tail };
        *g *= cdf + x * INV_SQRT_TAU * exp(-z * z);
    }
}

/// `erfc(z) / 2` for `z ≥ 0`, from the Chebyshev fit described at [`gelu_in_place`].
#[inline(always)]
fn half_erfc(z: f32) -> f32 {
    const P: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = P.iter().rev().fold(0.0, |acc, c| acc * t + c);
    0.5 * t * exp(p - z * z)
}

/// `e^x` to within a few units in the last place, branch-free so that loops over it vectorise
/// (Cephes' `expf`: `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and
/// `2^n` built in the exponent bits). Inputs are clamped to `[-87, 88]`, where `e^x` and `2^n`
/// are normal floats; QuickGELU only needs `e^x` to saturate there.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n in the exponent bits, read off the integer n held in the low mantissa bits of
    // n + 1.5 · 2^23 (an integer operation, where a float-to-int cast would check for overflow).
    let biased = (n + ROUND)
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let two_n = f32::from_bits(biased << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;

    use super::super::transformer::attention_by_operations;
    use super::*;

    /// Deterministic values in about [-6, 6].
    fn values<B: Backend, const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
        let n = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..n).map(|i| 6.0 * ((i as f32) * 0.618).sin()).collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn host<const D: usize>(
        f: impl Fn(Tensor<Flex, D>) -> Tensor<Flex, D>,
        s: [usize; D],
    ) -> Vec<f32> {
        f(values(s)).into_data().to_vec().unwrap()
    }

    fn assert_close(what: &str, host: &[f32], ops: &[f32], tolerance: f32) {
        assert_eq!(host.len(), ops.len());
        for (i, (h, o)) in host.iter().zip(ops).enumerate() {
            assert!(
                (h - o).abs() <= tolerance * o.abs().max(1.0),
                "{what}[{i}]: {h} vs {o}"
            );
        }
    }

    /// QuickGELU through Burn's operations.
    fn quick_gelu_by_operations<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        x.clone() * activation::sigmoid(x * SLOPE)
    }

    /// Each function of this module beside the same function through Burn's operations, with
    /// the input shape it is tried on.
    type Pair<B> = (
        String,
        Box<dyn Fn(Tensor<B, 3>) -> Tensor<B, 3>>,
        Box<dyn Fn(Tensor<B, 3>) -> Tensor<B, 3>>,
        [usize; 3],
    );

    fn pairs<B: Backend>() -> Vec<Pair<B>> {
        // 11 keys: the softmax's eight-lane folds see a whole chunk and a remainder.
        let (shape, heads) = ([2, 11, 3 * 12], 3);
        let mut pairs: Vec<Pair<B>> = [false, true]
            .into_iter()
            .map(|causal| -> Pair<B> {
                (
                    format!("attention (causal {causal})"),
                    Box::new(move |qkv| packed_attention(qkv, heads, causal).unwrap()),
                    Box::new(move |qkv| attention_by_operations(qkv, heads, causal)),
                    shape,
                )
            })
            .collect();
        pairs.push((
            "QuickGELU".into(),
            Box::new(quick_gelu),
            Box::new(quick_gelu_by_operations),
            [3, 7, 33],
        ));
        pairs.push((
            "GELU".into(),
            Box::new(gelu),
            Box::new(activation::gelu),
            [3, 7, 33],
        ));
        pairs
    }

    #[test]
    fn host_loops_agree_with_burn_operations() {
        for (what, host_loop, by_operations, shape) in pairs::<Flex>() {
            let ops = host(&by_operations, shape);
            assert_close(&what, &host(&host_loop, shape), &ops, 1e-6);
        }
    }

    /// The input gradient of `(f(x) · w).sum()` at the test values, with fixed weights `w`, and
    /// the forward values.
    fn grads(
        f: &dyn Fn(Tensor<Autodiff<Flex>, 3>) -> Tensor<Autodiff<Flex>, 3>,
        shape: [usize; 3],
    ) -> (Vec<f32>, Vec<f32>) {
        let x = values::<Autodiff<Flex>, 3>(shape).require_grad();
        let y = f(x.clone());
        let n = y.shape().num_elements();
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos()).collect();
        let w = Tensor::<Autodiff<Flex>, 1>::from_floats(w.as_slice(), &x.device());
        let loss = (y.clone().reshape([n]) * w).sum();
        let grads = loss.backward();
        let grad = x.grad(&grads).expect("x is tracked");
        (
            grad.into_data().to_vec().unwrap(),
            y.into_data().to_vec().unwrap(),
        )
    }

    #[test]
    fn autodiff_operations_agree_with_burn_operations() {
        // Under autodiff the host loops run as operations of their own (`cpu_autodiff`): their
        // values are the host loops' bits, and their gradients are those of Burn's operations,
        // which Burn's autodiff derives on its own.
        for ((what, host_loop, by_operations, shape), (_, plain, ..)) in
            pairs::<Autodiff<Flex>>().into_iter().zip(pairs::<Flex>())
        {
            let (got, forward) = grads(&host_loop, shape);
            let (want, _) = grads(&by_operations, shape);
            assert_eq!(forward, host(&plain, shape), "{what}: forward values");
            let scale = want.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(scale > 0.1, "{what}: gradients too small to compare");
            let tolerance = 1e-5 * scale;
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= tolerance,
                    "{what} gradient[{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn layer_norm_operation_agrees_with_burn_operations() {
        // The LayerNorm autodiff operation against Burn's LayerNorm under autodiff (its own
        // decomposition, which Burn's autodiff differentiates): values, and the gradients of x,
        // gamma and beta.
        type Ad = Autodiff<Flex>;
        // An epsilon large beside the rows' variances (about 18), so that a lost one shows.
        let (shape, eps) = ([3, 7, 33], 4.0);
        let device = Default::default();
        let mut ln = burn::nn::LayerNormConfig::new(33)
            .with_epsilon(eps)
            .init::<Ad>(&device);
        let scale: Vec<f32> = (0..33).map(|i| 1.0 + 0.3 * (i as f32).sin()).collect();
        let shift: Vec<f32> = (0..33).map(|i| 0.2 * (i as f32).cos()).collect();
        let param = |v: &[f32]| Param::from_tensor(Tensor::from_floats(v, &device));
        ln.gamma = param(&scale);
        ln.beta = Some(param(&shift));
        let run = |f: &dyn Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>| {
            let x = values::<Ad, 3>(shape).require_grad();
            let y = f(x.clone());
            let n = y.shape().num_elements();
            let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos()).collect();
            let w = Tensor::<Ad, 1>::from_floats(w.as_slice(), &device);
            let grads = (y.clone().reshape([n]) * w).sum().backward();
            let beta = ln.beta.as_ref().expect("a shift");
            [
                y.into_data(),
                x.grad(&grads).expect("x is tracked").into_data(),
                ln.gamma
                    .val()
                    .grad(&grads)
                    .expect("gamma is tracked")
                    .into_data(),
                beta.val()
                    .grad(&grads)
                    .expect("beta is tracked")
                    .into_data(),
            ]
            .map(|data| data.to_vec::<f32>().unwrap())
        };
        let got = run(&|x| layer_norm(&ln, eps, x));
        let want = run(&|x| ln.forward(x));
        for ((what, got), want) in ["values", "x", "gamma", "beta"].iter().zip(got).zip(want) {
            let scale = want.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(scale > 0.1, "{what}: too small to compare");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g} vs {w}");
            }
        }
    }

    #[test]
    fn a_causal_query_ignores_later_keys() {
        // Changing the last token's q, k and v changes no earlier output row.
        let (shape, heads) = ([1, 9, 3 * 8], 2);
        let changed = |qkv: Tensor<Flex, 3>| {
            let last = Tensor::full([1, 1, 3 * 8], 5.0, &qkv.device());
            qkv.slice_assign([0..1, 8..9, 0..24], last)
        };
        let plain = host(|qkv| packed_attention(qkv, heads, true).unwrap(), shape);
        let edited = host(
            |qkv| packed_attention(changed(qkv), heads, true).unwrap(),
            shape,
        );
        assert_eq!(plain[..8 * 8], edited[..8 * 8]);
        assert_ne!(plain[8 * 8..], edited[8 * 8..]);
    }

    #[test]
    fn exp_agrees_with_the_standard_library() {
        let mut worst = 0.0f32;
        // Inside the clamp (`-87.0 + 1e-3` as f32 is above -87).
        for i in -86_999..=87_999 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    #[test]
    fn gelu_matches_the_normal_cdf_and_saturates() {
        // x · Φ(x), with Φ from tables of the normal distribution.
        let known = [
            (-3.0, 0.001_349_898_031_630_1),
            (-1.0, 0.158_655_253_931_457_07),
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (2.0, 0.977_249_868_051_820_8),
        ];
        for (x, phi) in known {
            let mut got = [x as f32];
            gelu_in_place(&mut got);
            let want = (x * phi) as f32;
            assert!(
                (got[0] - want).abs() <= 1e-6 * want.abs(),
                "GELU({x}) = {}, not {want}",
                got[0]
            );
        }
        let mut extremes = [-1e30, -60.0, 60.0, 1e30];
        gelu_in_place(&mut extremes);
        assert_eq!(
            extremes.map(|v| v.abs() < 1e-30),
            [true, true, false, false]
        );
        assert_eq!(extremes[2..], [60.0, 1e30]);
    }

    #[test]
    fn quick_gelu_matches_its_definition_and_saturates() {
        let inputs = [
            -1e30, -200.0, -60.0, -3.5, -1.0, -1e-3, 0.0, 1e-3, 0.7, 4.0, 60.0, 1e30,
        ];
        let mut got = inputs;
        quick_gelu_in_place(&mut got);
        for (x, g) in inputs.iter().zip(got) {
            let want = (f64::from(*x) / (1.0 + (-1.702 * f64::from(*x)).exp())) as f32;
            let tolerance = 1e-6 * want.abs().max(1.0);
            assert!(
                (g - want).abs() <= tolerance,
                "QuickGELU({x}) = {g}, not {want}"
            );
        }
    }

    /// A host loop in the code `widest` picks and in baseline code: the same bits. `job` builds
    /// the loop over the buffer it is given and runs it with the runner it is given.
    fn assert_wide_is_narrow(inputs: &[f32], job: impl Fn(&mut [f32], fn(HostLoop))) {
        let (mut narrow, mut wide) = (inputs.to_vec(), inputs.to_vec());
        job(&mut narrow, |job| job.run());
        job(&mut wide, widest);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(narrow), bits(wide));
    }

    #[test]
    fn wide_loops_give_the_same_bits() {
        // On a processor with AVX2, `widest` runs eight-lane code; without it, this compares the
        // baseline code with itself.
        let inputs: Vec<f32> = (0..1003).map(|i| (i as f32 - 501.0) * 0.0371).collect();
        for curve in [Activation::QuickGelu, Activation::Gelu] {
            assert_wide_is_narrow(&inputs, |v, run| run(HostLoop::Activate(curve, v)));
            assert_wide_is_narrow(&inputs, |grads, run| {
                run(HostLoop::Derive(curve, &inputs, grads))
            });
        }
        let square = &inputs[..17 * 17];
        assert_wide_is_narrow(square, |scores, run| {
            run(HostLoop::SoftmaxRows {
                scores,
                seq: 17,
                scale: 0.3,
                causal: true,
            })
        });
        let probs: Vec<f32> = square.iter().map(|v| v.abs() / 40.0).collect();
        assert_wide_is_narrow(square, |grads, run| {
            run(HostLoop::SoftmaxGradRows {
                probs: &probs,
                grads,
                seq: 17,
            })
        });
    }
}
