//! Layer 2 of the CPU fast paths: the slice math on tensors of Burn's CPU backend
//! (`FlexTensor`), with and without autodiff alike. Here shapes are read and checked, values made
//! contiguous where they are not, and buffers reused where nothing else holds them; the dispatch
//! point runs these outside autodiff, and the autodiff operations run them forward and backward.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

use super::slices::{self, LayerNormGrads, Rhs, products};
use crate::config::Activation;

/// `t`, or a copy of it with its f32 values in one contiguous run if they are not.
fn contiguous(t: &FlexTensor) -> Cow<'_, FlexTensor> {
    match t.as_slice::<f32>() {
        Some(_) => Cow::Borrowed(t),
        None => Cow::Owned(t.to_contiguous()),
    }
}

/// The f32 values of a tensor made [`contiguous`].
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor has an f32 slice")
}

/// The f32 values of host data.
fn f32s(data: &mut TensorData) -> &mut [f32] {
    data.as_mut_slice::<f32>()
        .expect("an f32 tensor holds f32 values")
}

/// The MLP activation `curve` over `x`, in `x`'s own buffer where nothing else holds it (in a copy
/// otherwise).
pub(super) fn activate(x: FlexTensor, curve: Activation) -> FlexTensor {
    let mut data = x.into_data();
    slices::activate_in_place(curve, f32s(&mut data));
    FlexTensor::from_data(data)
}

/// [`activate`] into a new buffer, `x` left as it is: the forward pass of an activation under
/// autodiff, which keeps its input for the backward pass.
pub(super) fn activated(x: &FlexTensor, curve: Activation) -> FlexTensor {
    let copy = TensorData::new(values(&contiguous(x)).to_vec(), x.layout().shape().clone());
    activate(FlexTensor::from_data(copy), curve)
}

/// The gradient of an activation's input `x` from that of its output, `grad` (whose buffer it
/// becomes where nothing else holds it): times the curve's derivative at `x`.
pub(super) fn activation_grads(curve: Activation, x: &FlexTensor, grad: FlexTensor) -> FlexTensor {
    let mut grad = grad.into_data();
    slices::activation_grads(curve, values(&contiguous(x)), f32s(&mut grad));
    FlexTensor::from_data(grad)
}

/// Multi-head attention, `softmax(q kᵀ / √d) v` per head, from the packed projections `qkv`
/// (`[batch, seq, 3·width]`), as `[batch, seq, width]`; `causal`: a query sees no later key.
pub(super) fn attention(qkv: &FlexTensor, heads: usize, causal: bool) -> FlexTensor {
    let dims = qkv.layout().shape().dims::<3>();
    let out = slices::attention_values(values(&contiguous(qkv)), dims, heads, causal);
    let [batch, seq, packed] = dims;
    FlexTensor::from_data(TensorData::new(out, [batch, seq, packed / 3]))
}

/// The gradient of [`attention`]'s input `qkv` from that of its output, `grad`.
pub(super) fn attention_grads(
    qkv: &FlexTensor,
    grad: &FlexTensor,
    heads: usize,
    causal: bool,
) -> FlexTensor {
    let dims = qkv.layout().shape().dims::<3>();
    let (qkv, grad) = (contiguous(qkv), contiguous(grad));
    let qkv_grads = slices::attention_grads(values(&qkv), values(&grad), dims, heads, causal);
    FlexTensor::from_data(TensorData::new(qkv_grads, dims))
}

/// The gradients of a LayerNorm's `x`, `gamma` and `beta`, in that order, from that of its output,
/// `grad`, the LayerNorm's epsilon being `eps`.
pub(super) fn layer_norm_grads(
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    eps: f32,
) -> [FlexTensor; 3] {
    let shape = x.layout().shape().clone();
    let [x, gamma, grad] = [x, gamma, grad].map(contiguous);
    let LayerNormGrads { x, gamma, beta } =
        slices::layer_norm_grads(values(&x), values(&gamma), values(&grad), eps);
    let width = gamma.len();
    [
        TensorData::new(x, shape),
        TensorData::new(gamma, [width]),
        TensorData::new(beta, [width]),
    ]
    .map(FlexTensor::from_data)
}

/// `curve(residual + x · weight + bias)` on the host, `x` being `[batch, seq, d_in]`, `weight`
/// `[d_in, d_out]`, `bias` `[1, d_out]`, and the residual, when there is one, `[batch, seq, d_out]`.
pub(super) fn linear(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    residual: Option<FlexTensor>,
    curve: Option<Activation>,
) -> FlexTensor {
    let x = contiguous(x);
    let weight = contiguous(weight);
    let [batch, seq, d_in] = x.layout().shape().dims::<3>();
    let d_out = weight.layout().shape()[1];
    let bias = values(bias);
    let mut out = match residual {
        Some(residual) => {
            assert_eq!(residual.layout().shape().dims::<3>(), [batch, seq, d_out]);
            // The residual's own buffer where nothing else holds it, a copy otherwise.
            let mut out = residual.into_data();
            out.as_mut_slice::<f32>()
                .expect("the residual holds f32 values")
                .chunks_exact_mut(d_out)
                .for_each(|row| row.iter_mut().zip(bias).for_each(|(r, b)| *r += b));
            out
        }
        None => {
            let mut rows = Vec::with_capacity(batch * seq * d_out);
            (0..batch * seq).for_each(|_| rows.extend_from_slice(bias));
            TensorData::new(rows, [batch, seq, d_out])
        }
    };
    let rhs = Rhs::rows(values(&weight), [d_in, d_out]);
    let out_values = out.as_mut_slice::<f32>().expect("f32 output");
    products(out_values, values(&x), rhs, seq, |rows| {
        if let Some(curve) = curve {
            slices::activate_in_place(curve, rows);
        }
    });
    FlexTensor::from_data(out)
}

/// The gradient of a frozen linear layer's input `[batch, seq, d_in]` from that of its output,
/// `grad` (`[batch, seq, d_out]`): `grad · weightᵀ`.
pub(super) fn linear_input_grad(grad: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let (grad, weight) = (contiguous(grad), contiguous(weight));
    let [batch, seq, d_out] = grad.layout().shape().dims::<3>();
    let d_in = weight.layout().shape()[0];
    let mut out = vec![0.0f32; batch * seq * d_in];
    let rhs = Rhs::transposed(values(&weight), [d_in, d_out]);
    products(&mut out, values(&grad), rhs, seq, |_| {});
    FlexTensor::from_data(TensorData::new(out, [batch, seq, d_in]))
}
