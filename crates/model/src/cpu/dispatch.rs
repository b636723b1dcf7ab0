//! Layer 4 of the CPU fast paths: the dispatch point, the only code that asks whether the model's
//! backend is Burn's CPU backend. The model is generic over `B: Backend`, so that question can
//! only be answered at run time: a tensor's primitive is downcast to the CPU backend's
//! (`FlexTensor`, or `Autodiff<Flex>`'s under autodiff), and decisions that have a device but no
//! tensor read the backend's name. Asking it here alone keeps the layers below free of generics
//! (they take the CPU backend's own types) and the model free of backend checks: each function
//! here either runs its fast path and gives `Ok`, or hands its inputs back for the caller to run
//! Burn's operations, which give the same results up to rounding on any backend.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::autodiff::{self, CpuAutodiff, Primitive};
use super::kernels;
use crate::config::Activation;

/// Whether `B` is Burn's CPU backend (burn-flex, with or without autodiff), by its name.
fn on_cpu<B: Backend>(device: &B::Device) -> bool {
    B::name(device).contains("flex")
}

/// On Burn's CPU backend, the number of CPU threads to spread independent work over, rayon's
/// (`clip::cpu_parts` says why); `None` elsewhere.
pub(crate) fn threads<B: Backend>(device: &B::Device) -> Option<usize> {
    on_cpu::<B>(device).then(rayon::current_num_threads)
}

/// Whether attention through Burn's operations (autodiff on the CPU) should run as batched
/// matmuls and a softmax rather than Burn's fused attention: on Burn's CPU backend the fused
/// kernel works through the heads one after the other, on one core, after copying q, k and v into
/// head-major order, while its matmuls and softmax use every core and read q, k and v where they
/// lie. GPU backends keep the fused (flash) kernel.
pub(crate) fn unfused_attention<B: Backend>(device: &B::Device) -> bool {
    on_cpu::<B>(device)
}

/// The MLP activation `curve` over `x` as one host loop (under autodiff, one operation), or `x`
/// back.
pub(crate) fn activate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    curve: Activation,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    on_either(
        x,
        |x| kernels::activate(x, curve),
        |x| autodiff::activate(x, curve),
    )
}

/// Multi-head attention from the packed projections `qkv` (`[batch, seq, 3·width]`) to
/// `[batch, seq, width]` on the host, reading q, k and v where they lie (under autodiff, one
/// operation), or `qkv` back.
pub(crate) fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    on_either(
        qkv,
        |qkv| kernels::attention(&qkv, heads, causal),
        |qkv| autodiff::attention(qkv, heads, causal),
    )
}

/// `ln` over the last axis of `x` with epsilon `eps` as one autodiff operation on the CPU backend
/// under autodiff, or `x` back: outside autodiff that backend's own LayerNorm is already fused.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(beta) = &ln.beta else {
        return Err(x);
    };
    let tracked = (
        into_autodiff(x),
        into_autodiff(ln.gamma.val()),
        into_autodiff(beta.val()),
    );
    match tracked {
        (Ok(x), Ok(gamma), Ok(beta)) => {
            Ok(from_autodiff(autodiff::layer_norm(x, gamma, beta, eps)))
        }
        (x, ..) => Err(x.map_or_else(|x| x, from_autodiff)),
    }
}

/// The inputs of a linear layer handed back when its product cannot be folded: x and the
/// residual.
type Unfolded<B> = (Tensor<B, 3>, Option<Tensor<B, 3>>);

/// `curve(residual + x · W + b)` for `layer` over `x` (`[batch, seq, d_in]`), the residual and the
/// activation each where given, folded into one product on Burn's CPU backend for f32 values: on
/// the host outside autodiff, and under autodiff as one operation (then the activation as
/// another) where the layer's weight and bias are frozen. Elsewhere `x` and the residual back.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    residual: Option<Tensor<B, 3>>,
    curve: Option<Activation>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    if residual.as_ref().is_some_and(|r| r.dtype() != DType::F32) {
        return Err((x, residual));
    }
    let x = match into_host(x) {
        Ok(x) => return host_linear(layer, x, residual, curve),
        Err(x) => x,
    };
    match into_autodiff(x) {
        Ok(x) => frozen_linear(layer, x, residual, curve),
        Err(x) => Err((x, residual)),
    }
}

/// [`linear`] outside autodiff, where the layer's weight and bias are f32 values too.
fn host_linear<B: Backend>(
    layer: &Linear<B>,
    x: FlexTensor,
    residual: Option<Tensor<B, 3>>,
    curve: Option<Activation>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    let host = |t: Tensor<B, 2>| into_host(t).ok();
    let weight = host(layer.weight.val());
    let bias = layer.bias.as_ref().and_then(|b| host(b.val().unsqueeze()));
    let (Some(weight), Some(bias)) = (weight, bias) else {
        return Err((from_host(x), residual));
    };
    let residual = residual.map(|r| into_host(r).unwrap_or_else(|_| unreachable!("as x")));
    Ok(from_host(kernels::linear(
        &x, &weight, &bias, residual, curve,
    )))
}

/// [`linear`] under autodiff, where the layer's weight and bias are frozen.
fn frozen_linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<CpuAutodiff, 3>,
    residual: Option<Tensor<B, 3>>,
    curve: Option<Activation>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    let frozen = |t: Tensor<B, 2>| {
        (!t.is_require_grad())
            .then(|| into_autodiff(t).ok())
            .flatten()
            .map(|t| t.into_primitive().tensor().primitive)
    };
    let weight = frozen(layer.weight.val());
    let bias = layer
        .bias
        .as_ref()
        .and_then(|b| frozen(b.val().unsqueeze()));
    let (Some(weight), Some(bias)) = (weight, bias) else {
        return Err((from_autodiff(x), residual));
    };
    let residual = residual.map(|r| into_autodiff(r).unwrap_or_else(|_| unreachable!("as x")));
    let y = autodiff::frozen_linear(x, weight, &bias, residual);
    Ok(from_autodiff(match curve {
        Some(curve) => autodiff::activate(y, curve),
        None => y,
    }))
}

/// `host` over `x` on Burn's CPU backend, `tracked` over it there under autodiff, or `x` back on
/// any other backend or for values other than f32.
fn on_either<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    host: impl FnOnce(FlexTensor) -> FlexTensor,
    tracked: impl FnOnce(Tensor<CpuAutodiff, D>) -> Tensor<CpuAutodiff, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let x = match into_host(x) {
        Ok(x) => return Ok(from_host(host(x))),
        Err(x) => x,
    };
    into_autodiff(x).map(|x| from_autodiff(tracked(x)))
}

/// `x`'s tensor of the CPU backend, if `x` is one holding f32 values, or `x` back.
fn into_host<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    downcast(x)
}

/// `x` as a tensor of the CPU backend under autodiff, if it is one holding f32 values, or `x`
/// back.
fn into_autodiff<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<CpuAutodiff, D>, Tensor<B, D>> {
    downcast::<_, D, Primitive>(x).map(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
}

/// A result of the kernels back in the caller's backend, the CPU backend (its input came from
/// [`into_host`]).
fn from_host<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    upcast(t)
}

/// A result of the autodiff operations back in the caller's backend, the CPU backend under
/// autodiff (its input came from [`into_autodiff`]).
fn from_autodiff<B: Backend, const D: usize>(x: Tensor<CpuAutodiff, D>) -> Tensor<B, D> {
    upcast(x.into_primitive().tensor())
}

/// `x`'s float primitive as a `P`, if it is one and holds f32 values, or `x` back.
fn downcast<B: Backend, const D: usize, P: 'static>(x: Tensor<B, D>) -> Result<P, Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    match x.into_primitive() {
        TensorPrimitive::Float(p) => {
            cast(p).map_err(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
        }
        quantized => Err(Tensor::from_primitive(quantized)),
    }
}

/// A primitive `p` that [`downcast`] took from a tensor of `B`, as a tensor of `B` again.
fn upcast<B: Backend, const D: usize, P: 'static>(p: P) -> Tensor<B, D> {
    let p = cast(p).unwrap_or_else(|_| unreachable!("the input was of this backend"));
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `value` as a `To`, if it is one.
fn cast<From: 'static, To: 'static>(value: From) -> Result<To, From> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<To>>() {
        Some(to) => Ok(to.take().expect("the slot was just filled")),
        None => Err(slot.expect("a failed downcast leaves the slot as it was")),
    }
}
