//! The host loops over whole buffers, each compiled for AVX2 where the processor has it: eight
//! lanes wide instead of the four of baseline x86-64, with the same bits either way.

use super::curves::{
    gelu_grads, gelu_in_place, quick_gelu_grads, quick_gelu_in_place, softmax_grads,
    softmax_in_place,
};
use crate::config::Activation;

/// `curve` over `values`, in place: an activation on its own, or fused into a product.
pub(crate) fn activate_in_place(curve: Activation, values: &mut [f32]) {
    widest(HostLoop::Activate(curve, values));
}

/// `grads` (of an activation's output) become the gradients of its input `values`: times the
/// curve's derivative there.
pub(crate) fn activation_grads(curve: Activation, values: &[f32], grads: &mut [f32]) {
    widest(HostLoop::Derive(curve, values, grads));
}

/// Each `[seq]` row of one head's `[seq, seq]` attention `scores` becomes its softmax at `scale`
/// (`causal`: row `i` sees keys `..=i`, the rest become zeros).
pub(super) fn softmax_rows(scores: &mut [f32], seq: usize, scale: f32, causal: bool) {
    widest(HostLoop::SoftmaxRows {
        scores,
        seq,
        scale,
        causal,
    });
}

/// The gradients of one head's `[seq, seq]` attention probabilities `probs` become those of the
/// scores the softmax took (before its scale), in place.
pub(super) fn softmax_grad_rows(probs: &[f32], grads: &mut [f32], seq: usize) {
    widest(HostLoop::SoftmaxGradRows { probs, grads, seq });
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

#[cfg(test)]
mod tests {
    use super::*;

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
