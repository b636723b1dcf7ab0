//! The dispatch point without the `cpu` feature: no backend is known to be Burn's CPU backend, so
//! each function hands its inputs back and the model runs Burn's operations on every backend. The
//! signatures are those of the feature's `dispatch`, so that the model's code is the same either
//! way.

use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::Activation;

/// No CPU threads to spread work over: one part.
pub(crate) fn threads<B: Backend>(_device: &B::Device) -> Option<usize> {
    None
}

/// Burn's fused attention on every backend.
pub(crate) fn unfused_attention<B: Backend>(_device: &B::Device) -> bool {
    false
}

/// `x` back: Burn's operations apply the activation.
pub(crate) fn activate<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    _curve: Activation,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    Err(x)
}

/// `qkv` back: Burn's operations attend.
pub(crate) fn attention<B: Backend>(
    qkv: Tensor<B, 3>,
    _heads: usize,
    _causal: bool,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    Err(qkv)
}

/// `x` back: Burn's LayerNorm runs.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    _ln: &LayerNorm<B>,
    _eps: f64,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    Err(x)
}

/// The inputs of a linear layer handed back: x and the residual (as in `dispatch`).
type Unfolded<B> = (Tensor<B, 3>, Option<Tensor<B, 3>>);

/// `x` and the residual back: Burn's linear layer, activation and add run.
pub(crate) fn linear<B: Backend>(
    _layer: &Linear<B>,
    x: Tensor<B, 3>,
    residual: Option<Tensor<B, 3>>,
    _curve: Option<Activation>,
) -> Result<Tensor<B, 3>, Unfolded<B>> {
    Err((x, residual))
}
