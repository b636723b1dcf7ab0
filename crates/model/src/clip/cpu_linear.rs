//! The transformer's linear layers on Burn's CPU backend outside autodiff, with what follows each
//! product folded into it: the bias, the residual add and the MLP activation.
//!
//! Burn's linear layer writes the product into a fresh buffer and adds the bias in a second pass
//! over it; the block then adds the residual in a third pass and applies the activation in a
//! fourth. Here the output starts as the residual plus the bias (the residual's own buffer where
//! nothing else holds it), the product is accumulated into it, and the activation runs on each
//! sequence's rows right after its product, while they are still in cache.

use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_autodiff::{cast, contiguous, values};
use super::cpu_kernels::{activate, activate_in_place};
use super::transformer::cpu_backend;
use crate::config::Activation;

/// What comes after a linear layer's product in a residual block.
pub(crate) enum Then<B: Backend> {
    /// Nothing: `x · W + b`.
    Nothing,
    /// An MLP activation: `curve(x · W + b)`.
    Activate(Activation),
    /// A residual add: `r + x · W + b`, given `r`.
    Add(Tensor<B, 3>),
}

/// `layer` over `x` (`[batch, seq, d_in]`) followed by `then`: folded into one product on the
/// host on Burn's CPU backend outside autodiff for f32 values, through Burn's operations (and
/// `cpu_kernels`' activations) elsewhere.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    then: Then<B>,
) -> Tensor<B, 3> {
    let device = x.device();
    let f32_residual = match &then {
        Then::Add(residual) => residual.dtype() == DType::F32,
        _ => true,
    };
    let host = cpu_backend::<B>(&device)
        && !B::ad_enabled(&device)
        && x.dtype() == DType::F32
        && f32_residual;
    let mut x = x;
    if host && let Some((weight, bias)) = flex_parameters(layer) {
        match flex(x) {
            Ok(flex_x) => {
                let out = fused(&flex_x, &weight, &bias, then);
                let p = cast(out).unwrap_or_else(|_| unreachable!("x came from the CPU backend"));
                return Tensor::from_primitive(TensorPrimitive::Float(p));
            }
            Err(back) => x = back,
        }
    }
    let y = layer.forward(x);
    match then {
        Then::Nothing => y,
        Then::Activate(curve) => activate(y, curve),
        Then::Add(residual) => residual + y,
    }
}

/// The weight and bias of `layer` on the CPU backend in f32, if they are.
fn flex_parameters<B: Backend>(layer: &Linear<B>) -> Option<(FlexTensor, FlexTensor)> {
    let f32_flex = |t: Tensor<B, 2>| (t.dtype() == DType::F32).then(|| flex(t).ok()).flatten();
    let weight = f32_flex(layer.weight.val())?;
    let bias = f32_flex(layer.bias.as_ref()?.val().unsqueeze())?;
    Some((weight, bias))
}

/// `t`'s tensor of the CPU backend, or `t` back on another backend.
fn flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    match t.into_primitive() {
        TensorPrimitive::Float(p) => {
            cast::<_, FlexTensor>(p).map_err(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
        }
        quantized => Err(Tensor::from_primitive(quantized)),
    }
}

/// `then(x · weight + bias)` on the host, `x` being `[batch, seq, d_in]`, `weight` `[d_in, d_out]`.
fn fused<B: Backend>(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    then: Then<B>,
) -> FlexTensor {
    let x = contiguous(x);
    let weight = contiguous(weight);
    let [batch, seq, d_in] = x.layout().shape().dims::<3>();
    let d_out = weight.layout().shape()[1];
    let bias = values(bias);
    let curve = match &then {
        Then::Activate(curve) => Some(*curve),
        _ => None,
    };
    let mut out = match then {
        Then::Add(residual) => {
            let residual = flex(residual).unwrap_or_else(|_| unreachable!("same backend as x"));
            assert_eq!(residual.layout().shape().dims::<3>(), [batch, seq, d_out]);
            // The residual's own buffer where nothing else holds it, a copy otherwise.
            let mut out = residual.into_data();
            out.as_mut_slice::<f32>()
                .expect("the residual holds f32 values")
                .chunks_exact_mut(d_out)
                .for_each(|row| row.iter_mut().zip(bias).for_each(|(r, b)| *r += b));
            out
        }
        Then::Nothing | Then::Activate(_) => {
            let mut rows = Vec::with_capacity(batch * seq * d_out);
            (0..batch * seq).for_each(|_| rows.extend_from_slice(bias));
            TensorData::new(rows, [batch, seq, d_out])
        }
    };
    let (x, weight) = (values(&x), values(&weight));
    out.as_mut_slice::<f32>()
        .expect("f32 output")
        .par_chunks_mut((seq * d_out).max(1))
        .zip(x.par_chunks((seq * d_in).max(1)))
        .for_each(|(out, x)| {
            // SAFETY: `out` is `[seq, d_out]`, `x` `[seq, d_in]` and `weight` `[d_in, d_out]`, each
            // contiguous, and the output is a buffer of its own.
            unsafe { accumulate([seq, d_out, d_in], out, x, weight) };
            if let Some(curve) = curve {
                activate_in_place(curve, out);
            }
        });
    FlexTensor::from_data(out)
}

/// `out += lhs · rhs` for an `[m, k]` lhs, a `[k, n]` rhs and an `[m, n]` out, all row-major, on
/// this thread.
///
/// # Safety
/// The slices hold at least those many elements.
unsafe fn accumulate([m, n, k]: [usize; 3], out: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    debug_assert!(out.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
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
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::tensor::activation;

    use super::*;

    /// Deterministic values in about [-2, 2], different for each `seed`.
    fn values<const D: usize>(shape: [usize; D], seed: f32) -> Tensor<Flex, D> {
        let n = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..n)
            .map(|i| 2.0 * ((i as f32) * 0.618 + seed).sin())
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// A `[7, 9]` linear layer.
    fn layer() -> Linear<Flex> {
        Linear {
            weight: Param::from_tensor(values([7, 9], 1.0)),
            bias: Some(Param::from_tensor(values([9], 2.0))),
        }
    }

    fn assert_close(what: &str, got: Tensor<Flex, 3>, want: Tensor<Flex, 3>) {
        let (got, want) = (got.into_data(), want.into_data());
        assert_eq!(got.shape, want.shape, "{what}: shape");
        let (got, want) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn fused_layers_agree_with_burn_operations() {
        let layer = layer();
        let x = || values([2, 5, 7], 3.0);
        let residual = || values([2, 5, 9], 4.0);
        let product = || layer.forward(x());
        let sigmoid_part = |y: Tensor<Flex, 3>| activation::sigmoid(y * 1.702);
        let cases: [(&str, Then<Flex>, Tensor<Flex, 3>); 4] = [
            ("bias", Then::Nothing, product()),
            (
                "QuickGELU",
                Then::Activate(Activation::QuickGelu),
                product() * sigmoid_part(product()),
            ),
            (
                "GELU",
                Then::Activate(Activation::Gelu),
                activation::gelu(product()),
            ),
            ("residual", Then::Add(residual()), residual() + product()),
        ];
        for (what, then, want) in cases {
            assert_close(what, linear(&layer, x(), then), want);
        }
        // x as a strided view: read through a contiguous copy.
        let strided = values([5, 2, 7], 3.0).swap_dims(0, 1);
        let want = layer.forward(strided.clone());
        assert_close("strided x", linear(&layer, strided, Then::Nothing), want);
    }

    #[test]
    fn a_residual_held_elsewhere_is_left_as_it_was() {
        // The residual's buffer becomes the output only where nothing else holds it.
        let residual = values([2, 5, 9], 4.0);
        let before = residual.to_data();
        let _ = linear(
            &layer(),
            values([2, 5, 7], 3.0),
            Then::Add(residual.clone()),
        );
        assert_eq!(residual.into_data(), before);
    }
}
