//! The transformer's linear layers with what follows each product: the bias, the residual add and
//! the MLP activation.
//!
//! Burn's linear layer writes the product into a fresh buffer and adds the bias in a second pass
//! over it; the block then adds the residual in a third pass and applies the activation in a
//! fourth. On Burn's CPU backend `crate::cpu` folds them into the product (outside autodiff the
//! activation too, run on each chunk of whole sequences right after its product, while its rows
//! are still in cache); elsewhere, and where it hands the inputs back, Burn's operations run.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, activation};

use crate::config::{Activation, QUICK_GELU_SLOPE};
use crate::cpu;

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

/// `layer` over `x` (`[batch, seq, d_in]`) followed by `then`: folded into one product by
/// `crate::cpu` where it can, through Burn's operations elsewhere.
pub(crate) fn linear<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    then: Then<B>,
) -> Tensor<B, 3> {
    let (residual, curve) = then.split();
    let (x, residual) = match cpu::linear(layer, x, residual, curve) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    let y = layer.forward(x);
    let y = match curve {
        Some(curve) => activate(y, curve),
        None => y,
    };
    match residual {
        Some(residual) => residual + y,
        None => y,
    }
}

/// The MLP activation `curve` over `x`: a host loop of `crate::cpu` where it can, Burn's
/// operations elsewhere.
fn activate<B: Backend, const D: usize>(x: Tensor<B, D>, curve: Activation) -> Tensor<B, D> {
    cpu::activate(x, curve).unwrap_or_else(|x| activate_by_operations(x, curve))
}

/// The MLP activation `curve` over `x` through Burn's operations: QuickGELU, `x · σ(1.702 x)`
/// (OpenAI's CLIP models), or GELU, `x · Φ(x)` with the exact normal CDF (open_clip's own models,
/// LAION's among them).
pub(super) fn activate_by_operations<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    curve: Activation,
) -> Tensor<B, D> {
    match curve {
        Activation::QuickGelu => x.clone() * activation::sigmoid(x * QUICK_GELU_SLOPE),
        Activation::Gelu => activation::gelu(x),
    }
}
