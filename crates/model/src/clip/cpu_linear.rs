//! The transformer's linear layers on Burn's CPU backend, with what follows each product folded
//! into it: the bias, the residual add and (outside autodiff) the MLP activation.
//!
//! Burn's linear layer writes the product into a fresh buffer and adds the bias in a second pass
//! over it; the block then adds the residual in a third pass and applies the activation in a
//! fourth. Here the output starts as the residual plus the bias (the residual's own buffer where
//! nothing else holds it), the product is accumulated into it, and the activation runs on each
//! chunk of whole sequences right after its product, while its rows are still in cache.
//!
//! Under autodiff (training) the same product, with its bias and residual, is one operation
//! (`cpu_autodiff::frozen_linear`) when the layer's weight and bias are frozen, as all of CLIP's
//! are in prompt learning: its backward pass is one product of the output's gradient with the
//! weight's transpose. The activation stays an operation of its own, which keeps its input for
//! the backward pass.

use burn::backend::flex::FlexTensor;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu_autodiff::{self, cast, contiguous, values};
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

impl<B: Backend> Then<B> {
    /// The residual to add, if any, and the activation to apply, if any.
    fn split(self) -> (Option<Tensor<B, 3>>, Option<Activation>) {
        match self {
            Then::Nothing => (None, None),
            Then::Activate(curve) => (None, Some(curve)),
            Then::Add(residual) => (Some(residual), None),
        }
    }
}

/// `layer` over `x` (`[batch, seq, d_in]`) followed by `then`: folded into one product on the
/// host on Burn's CPU backend for f32 values (under autodiff when the layer is frozen), through
/// Burn's operations (and `cpu_kernels`' activations) elsewhere.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    mut x: Tensor<B, 3>,
    then: Then<B>,
) -> Tensor<B, 3> {
    let (mut residual, curve) = then.split();
    let device = x.device();
    let f32_values =
        x.dtype() == DType::F32 && residual.as_ref().is_none_or(|r| r.dtype() == DType::F32);
    if cpu_backend::<B>(&device) && f32_values {
        let folded = if B::ad_enabled(&device) {
            frozen_on_autodiff(layer, x, residual).map(|y| activated(y, curve))
        } else {
            host(layer, x, residual, curve)
        };
        match folded {
            Ok(y) => return y,
            Err(inputs) => (x, residual) = inputs,
        }
    }
    let y = activated(layer.forward(x), curve);
    match residual {
        Some(residual) => residual + y,
        None => y,
    }
}

/// `y`, or `curve` over it.
fn activated<B: Backend>(y: Tensor<B, 3>, curve: Option<Activation>) -> Tensor<B, 3> {
    match curve {
        Some(curve) => activate(y, curve),
        None => y,
    }
}

/// The inputs of a layer handed back when its product cannot be folded.
type Unfolded<B> = (Tensor<B, 3>, Option<Tensor<B, 3>>);

/// [`linear`] on the host outside autodiff, or its inputs back.
fn host<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    residual: Option<Tensor<B, 3>>,
    curve: Option<Activation>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    let Some((weight, bias)) = flex_parameters(layer) else {
        return Err((x, residual));
    };
    converted(x, residual, flex, |x, residual| {
        let out = fused(&x, &weight, &bias, residual, curve);
        let p = cast(out).unwrap_or_else(|_| unreachable!("x came from the CPU backend"));
        Tensor::from_primitive(TensorPrimitive::Float(p))
    })
}

/// [`linear`]'s product, bias and residual as one operation of Burn's CPU backend under autodiff,
/// when the layer's weight and bias are frozen, or the inputs back.
fn frozen_on_autodiff<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    residual: Option<Tensor<B, 3>>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    let frozen = |t: Tensor<B, 2>| {
        (!t.is_require_grad())
            .then(|| cpu_autodiff::into_cpu_autodiff(t).ok())
            .flatten()
            .map(|t| t.into_primitive().tensor().primitive)
    };
    let weight = frozen(layer.weight.val());
    let bias = layer
        .bias
        .as_ref()
        .and_then(|b| frozen(b.val().unsqueeze()));
    let (Some(weight), Some(bias)) = (weight, bias) else {
        return Err((x, residual));
    };
    converted(
        x,
        residual,
        cpu_autodiff::into_cpu_autodiff,
        |x, residual| {
            cpu_autodiff::from_cpu_autodiff(cpu_autodiff::frozen_linear(x, weight, &bias, residual))
        },
    )
}

/// `run` over x and the residual once `convert` has taken them to the backend `run` works in, or
/// both back, unconverted, where x is not of that backend.
fn converted<B: Backend, T>(
    x: Tensor<B, 3>,
    residual: Option<Tensor<B, 3>>,
    convert: impl Fn(Tensor<B, 3>) -> Result<T, Tensor<B, 3>>,
    run: impl FnOnce(T, Option<T>) -> Tensor<B, 3>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    let x = match convert(x) {
        Ok(x) => x,
        Err(x) => return Err((x, residual)),
    };
    let residual =
        residual.map(|r| convert(r).unwrap_or_else(|_| unreachable!("same backend as x")));
    Ok(run(x, residual))
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

/// `curve(residual + x · weight + bias)` on the host, `x` being `[batch, seq, d_in]`, `weight`
/// `[d_in, d_out]`, `bias` `[1, d_out]`, and the residual, when there is one, `[batch, seq, d_out]`.
pub(super) fn fused(
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
            activate_in_place(curve, rows);
        }
    });
    FlexTensor::from_data(out)
}

/// The gradient of a frozen linear layer's input `[batch, seq, d_in]` from that of its output,
/// `grad` (`[batch, seq, d_out]`): `grad · weightᵀ`, in products of [`chunk_rows`] rows.
pub(super) fn input_grad(grad: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let (grad, weight) = (contiguous(grad), contiguous(weight));
    let [batch, seq, d_out] = grad.layout().shape().dims::<3>();
    let d_in = weight.layout().shape()[0];
    let mut out = vec![0.0f32; batch * seq * d_in];
    let rhs = Rhs::transposed(values(&weight), [d_in, d_out]);
    products(&mut out, values(&grad), rhs, seq, |_| {});
    FlexTensor::from_data(TensorData::new(out, [batch, seq, d_in]))
}

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
fn products(out: &mut [f32], lhs: &[f32], rhs: Rhs, seq: usize, then: impl Fn(&mut [f32]) + Sync) {
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
struct Rhs<'a> {
    values: &'a [f32],
    /// `[k, n]`.
    shape: [usize; 2],
    row_stride: isize,
    column_stride: isize,
}

impl<'a> Rhs<'a> {
    /// A row-major `[rows, columns]` matrix.
    fn rows(values: &'a [f32], [rows, columns]: [usize; 2]) -> Self {
        Self {
            values,
            shape: [rows, columns],
            row_stride: columns as isize,
            column_stride: 1,
        }
    }

    /// The transpose of a row-major `[rows, columns]` matrix: `[columns, rows]`.
    fn transposed(values: &'a [f32], [rows, columns]: [usize; 2]) -> Self {
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

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, Param};
    use burn::tensor::activation;

    use super::*;

    /// Deterministic values in about [-2, 2], different for each `seed`.
    fn values<B: Backend, const D: usize>(shape: [usize; D], seed: f32) -> Tensor<B, D> {
        let n = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..n)
            .map(|i| 2.0 * ((i as f32) * 0.618 + seed).sin())
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    /// A `[7, 9]` linear layer.
    fn layer<B: Backend>() -> Linear<B> {
        Linear {
            weight: Param::from_tensor(values([7, 9], 1.0)),
            bias: Some(Param::from_tensor(values([9], 2.0))),
        }
    }

    fn assert_close<B: Backend>(what: &str, got: Tensor<B, 3>, want: Tensor<B, 3>) {
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
        let layer = layer::<Flex>();
        // 40 sequences of 5 positions are two products of `chunk_rows`, the second shorter.
        for batch in [2, 40] {
            let x = || values([batch, 5, 7], 3.0);
            let residual = || values([batch, 5, 9], 4.0);
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
                assert_close(
                    &format!("{what} (batch {batch})"),
                    linear(&layer, x(), then),
                    want,
                );
            }
        }
        // x as a strided view: read through a contiguous copy.
        let strided = values::<Flex, 3>([5, 2, 7], 3.0).swap_dims(0, 1);
        let want = layer.forward(strided.clone());
        assert_close("strided x", linear(&layer, strided, Then::Nothing), want);
    }

    #[test]
    fn a_residual_held_elsewhere_is_left_as_it_was() {
        // The residual's buffer becomes the output only where nothing else holds it.
        let residual = values::<Flex, 3>([2, 5, 9], 4.0);
        let before = residual.to_data();
        let _ = linear(
            &layer::<Flex>(),
            values([2, 5, 7], 3.0),
            Then::Add(residual.clone()),
        );
        assert_eq!(residual.into_data(), before);
    }

    /// The output's values and the gradients of x and of the residual.
    type Step = [Tensor<Flex, 3>; 3];

    /// What a step through a layer under autodiff gives: the output's values and the gradients
    /// of x and of the residual for a loss weighting every output differently.
    fn step(
        batch: usize,
        f: impl Fn(Tensor<Autodiff<Flex>, 3>, Tensor<Autodiff<Flex>, 3>) -> Tensor<Autodiff<Flex>, 3>,
    ) -> Step {
        let x = values([batch, 5, 7], 3.0).require_grad();
        let residual = values([batch, 5, 9], 4.0).require_grad();
        let y = f(x.clone(), residual.clone());
        let grads = (y.clone() * values([batch, 5, 9], 5.0)).sum().backward();
        let grad = |t: Tensor<Autodiff<Flex>, 3>| t.grad(&grads).expect("tracked");
        [y.inner(), grad(x), grad(residual)]
    }

    #[test]
    fn frozen_layers_under_autodiff_agree_with_burn_autodiff() {
        // CLIP's layers are frozen in prompt learning: there the product, bias and residual are
        // one autodiff operation (`cpu_autodiff::frozen_linear`), whose values and gradients of
        // x and the residual must be those Burn's autodiff derives for its own operations.
        let frozen = layer::<Autodiff<Flex>>().no_grad();
        let fold = |x, residual| frozen_on_autodiff(&frozen, x, residual).expect("folds");
        // 40 sequences of 5 positions are two products of `chunk_rows` each way.
        for batch in [2, 40] {
            let cases: [(&str, Step, Step); 3] = [
                (
                    "bias",
                    step(batch, |x, r| fold(x, None) * r),
                    step(batch, |x, r| frozen.forward(x) * r),
                ),
                (
                    "residual",
                    step(batch, |x, r| fold(x, Some(r))),
                    step(batch, |x, r| r + frozen.forward(x)),
                ),
                (
                    "GELU after",
                    step(batch, |x, r| {
                        linear(&frozen, x, Then::Activate(Activation::Gelu)) * r
                    }),
                    step(batch, |x, r| activation::gelu(frozen.forward(x)) * r),
                ),
            ];
            for (what, got, want) in cases {
                for (part, (got, want)) in ["values", "x grad", "residual grad"]
                    .iter()
                    .zip(got.into_iter().zip(want))
                {
                    assert_close(&format!("{what} (batch {batch}): {part}"), got, want);
                }
            }
        }
        // A trained layer keeps Burn's operations, which give its weight a gradient.
        let trained = layer::<Autodiff<Flex>>();
        let x = values::<Autodiff<Flex>, 3>([2, 5, 7], 3.0).require_grad();
        assert!(frozen_on_autodiff(&trained, x, None).is_err());
    }
}
