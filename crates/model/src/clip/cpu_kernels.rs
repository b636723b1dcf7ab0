//! Fused loops for inference on Burn's CPU backend: QuickGELU (`x · σ(1.702 x)`, the MLP
//! activation of OpenAI's CLIP models) and attention's scaled, optionally causal softmax.
//!
//! Burn's CPU backend computes exponentials one element at a time through the C library's
//! `expf`, and each scaling, masking, reduction and product as a pass of its own: together about a
//! fifth of an image-encoder forward pass (`perf record` on `mocoop bench --cases encode-image`).
//! Outside autodiff, on f32 values, each function here is one pass over the buffer with an
//! exponential the compiler vectorises. Under autodiff (training) and on other backends Burn's
//! own operations run, as they record the graph.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor, TensorData, activation};

use super::transformer::cpu_backend;

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
    match host_values(x) {
        Ok((mut data, device)) => {
            quick_gelu_in_place(f32s(&mut data));
            Tensor::from_data(data, &device)
        }
        Err(x) => x.clone() * activation::sigmoid(x * SLOPE),
    }
}

/// `softmax(scale · scores)` over the last dimension, with the entries above the diagonal of
/// each trailing `[seq, seq]` square left out when `causal` (a query sees no later key).
pub(crate) fn scaled_softmax<B: Backend, const D: usize>(
    scores: Tensor<B, D>,
    scale: f32,
    causal: bool,
) -> Tensor<B, D> {
    let seq = scores.dims()[D - 1];
    match host_values(scores) {
        Ok((mut data, device)) => {
            for (i, row) in f32s(&mut data).chunks_exact_mut(seq).enumerate() {
                let visible = if causal { i % seq + 1 } else { seq };
                softmax_in_place(row, scale, visible);
            }
            Tensor::from_data(data, &device)
        }
        Err(scores) => {
            let device = scores.device();
            let mut scores = scores.mul_scalar(scale);
            if causal {
                let future = Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, &device);
                let bias =
                    Tensor::<B, 2>::zeros([seq, seq], &device).mask_fill(future, f32::NEG_INFINITY);
                scores = scores + bias.unsqueeze::<D>();
            }
            activation::softmax(scores, D - 1)
        }
    }
}

/// `row[..visible]` becomes `softmax(scale · row[..visible])`, the rest zeros.
fn softmax_in_place(row: &mut [f32], scale: f32, visible: usize) {
    let (seen, hidden) = row.split_at_mut(visible);
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in seen.iter_mut() {
        *v = exp(scale * (*v - max));
        sum += *v;
    }
    let inverse = sum.recip();
    seen.iter_mut().for_each(|v| *v *= inverse);
    hidden.fill(0.0);
}

/// Applies QuickGELU to each value.
fn quick_gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v /= 1.0 + exp(-SLOPE * *v);
    }
}

/// `e^x` to within a few units in the last place, branch-free so that loops over it vectorise
/// (Cephes' `expf`: `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and
/// `2^n` built in the exponent bits). Inputs are clamped to `[-87, 88]`, where `e^x` and `2^n`
/// are normal floats; QuickGELU only needs `e^x` to saturate there.
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
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};

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

    /// The same function through Burn's own operations: under autodiff the host loops step aside.
    fn burn_ops<const D: usize>(
        f: impl Fn(Tensor<Autodiff<Flex>, D>) -> Tensor<Autodiff<Flex>, D>,
        s: [usize; D],
    ) -> Vec<f32> {
        f(values(s)).into_data().to_vec().unwrap()
    }

    fn assert_close(what: &str, host: &[f32], ops: &[f32]) {
        assert_eq!(host.len(), ops.len());
        for (i, (h, o)) in host.iter().zip(ops).enumerate() {
            assert!(
                (h - o).abs() <= 1e-6 * o.abs().max(1.0),
                "{what}[{i}]: {h} vs {o}"
            );
        }
    }

    #[test]
    fn host_loops_agree_with_burn_operations() {
        let shape = [2, 3, 5, 5];
        for causal in [false, true] {
            let host = host(|x| scaled_softmax(x, 0.35, causal), shape);
            let ops = burn_ops(|x| scaled_softmax(x, 0.35, causal), shape);
            assert_close(&format!("softmax (causal {causal})"), &host, &ops);
            // Row 1 of each square sees keys 0 and 1 only when causal.
            assert_eq!(host[5 + 2] == 0.0, causal);
        }
        let host = host(quick_gelu, [7, 33]);
        assert_close("QuickGELU", &host, &burn_ops(quick_gelu, [7, 33]));
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
}
