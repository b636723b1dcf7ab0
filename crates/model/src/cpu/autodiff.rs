//! Layer 3 of the CPU fast paths: the kernels as operations of Burn's autodiff on its CPU backend
//! (`Autodiff<Flex>`, what `mocoop` trains with on the CPU), each with a backward pass of its own,
//! so that training gets them too: the image encoder under visual LN tuning and the prompts' way
//! through the text encoder.
//!
//! Burn's autodiff records a linear layer as a product and a bias add (and the residual add
//! after it as one more), an activation as several operations (QuickGELU: a scaling, a sigmoid
//! and a product, each with its own pass and buffer forward and backward), attention as head
//! copies, products and a softmax, and LayerNorm as its generic decomposition, all of them
//! computed again or walked element by element in the backward pass. Here each is one operation
//! whose backward pass is one kernel: an activation's derivative, LayerNorm's (one pass per row),
//! attention's (per sequence and head, a softmax computed again and four strided products) or a
//! frozen linear layer's (one product with the weight's transpose).
//!
//! Everything here takes and gives tensors of `Autodiff<Flex>` itself: finding out whether the
//! model's backend is that one is the dispatch point's business.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::ModuleOps;
use burn::tensor::{Tensor, TensorPrimitive};

use super::kernels;
use crate::config::Activation;

/// Burn's CPU backend under autodiff.
pub(super) type CpuAutodiff = Autodiff<Flex>;

/// The autodiff primitive of a tensor.
pub(super) type Primitive =
    <CpuAutodiff as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// Records `op` with inputs `inputs`, whose values `compute` turns into the output's values and
/// the state the backward pass reads (kept where autodiff tracks one of the inputs).
fn record<const D: usize, const N: usize, O: Backward<Flex, N>>(
    op: O,
    inputs: [Primitive; N],
    compute: impl FnOnce([FlexTensor; N]) -> (FlexTensor, O::State),
) -> Tensor<CpuAutodiff, D> {
    let nodes = inputs.each_ref().map(|input| input.node.clone());
    let (out, state) = compute(inputs.map(|input| input.primitive));
    let out = match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Records an operation with one input `x` and output `out`, keeping `x` for the backward pass
/// where autodiff tracks it.
fn record_unary<const D: usize, O: Backward<Flex, 1, State = FlexTensor>>(
    op: O,
    x: Tensor<CpuAutodiff, D>,
    out: impl FnOnce(&FlexTensor) -> FlexTensor,
) -> Tensor<CpuAutodiff, D> {
    record(op, [x.into_primitive().tensor()], |[x]| (out(&x), x))
}

/// An activation as one autodiff operation: the host loop forward, and its derivative times the
/// output's gradient backward.
#[derive(Debug)]
struct ActivationOp(Activation);

impl Backward<Flex, 1> for ActivationOp {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let input = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            kernels::activation_grads(self.0, &input, grad)
        });
    }
}

/// `curve` over `x` as one autodiff operation.
pub(super) fn activate<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    curve: Activation,
) -> Tensor<CpuAutodiff, D> {
    record_unary(ActivationOp(curve), x, |x| kernels::activated(x, curve))
}

/// Multi-head attention from the packed projections as one autodiff operation (see
/// [`kernels::attention`]).
#[derive(Debug)]
struct Attention {
    heads: usize,
    causal: bool,
}

impl Backward<Flex, 1> for Attention {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let qkv = ops.state;
        let Self { heads, causal } = self;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            kernels::attention_grads(&qkv, &grad, heads, causal)
        });
    }
}

/// `softmax(q kᵀ / √d) v` per head from the packed projections `qkv` (`[batch, seq, 3·width]`),
/// as `[batch, seq, width]`, as one autodiff operation.
pub(super) fn attention(
    qkv: Tensor<CpuAutodiff, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<CpuAutodiff, 3> {
    record_unary(Attention { heads, causal }, qkv, |qkv| {
        kernels::attention(qkv, heads, causal)
    })
}

/// LayerNorm as one autodiff operation with inputs x, gamma and beta.
#[derive(Debug)]
struct Norm {
    eps: f32,
}

impl Backward<Flex, 3> for Norm {
    /// x and gamma.
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x, gamma] = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let all = kernels::layer_norm_grads(&x, &gamma, &grad, self.eps);
        for (node, grad) in ops.parents.into_iter().zip(all) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// LayerNorm over the last axis of `x` with scale `gamma` and shift `beta`, as one autodiff
/// operation: forward, the CPU backend's own fused LayerNorm.
pub(super) fn layer_norm<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    gamma: Tensor<CpuAutodiff, 1>,
    beta: Tensor<CpuAutodiff, 1>,
    eps: f64,
) -> Tensor<CpuAutodiff, D> {
    let inputs = [
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    ];
    let op = Norm { eps: eps as f32 };
    record(op, inputs, |[x, gamma, beta]| {
        let out = Flex::layer_norm(x.clone(), gamma.clone(), Some(beta), eps);
        (out, [x, gamma])
    })
}

/// A linear layer with a frozen weight and bias, and the residual added to its output where
/// there is one, as one autodiff operation: x's gradient is the output's times the weight's
/// transpose, the residual's the output's own. Inputs: x, then the residual.
#[derive(Debug)]
struct FrozenLinear {
    /// `[d_in, d_out]`.
    weight: FlexTensor,
}

impl Backward<Flex, 1> for FrozenLinear {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            kernels::linear_input_grad(&grad, &self.weight)
        });
    }
}

impl Backward<Flex, 2> for FrozenLinear {
    type State = ();

    fn backward(self, ops: Ops<(), 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| kernels::linear_input_grad(&grad, &self.weight),
            |grad| grad,
        );
    }
}

/// `residual + x · weight + bias` (`x`: `[batch, seq, d_in]`, `weight`: `[d_in, d_out]`, `bias`:
/// `[1, d_out]`) as one autodiff operation, the weight and bias being frozen: forward,
/// [`kernels::linear`].
pub(super) fn frozen_linear(
    x: Tensor<CpuAutodiff, 3>,
    weight: FlexTensor,
    bias: &FlexTensor,
    residual: Option<Tensor<CpuAutodiff, 3>>,
) -> Tensor<CpuAutodiff, 3> {
    let x = x.into_primitive().tensor();
    let op = FrozenLinear {
        weight: weight.clone(),
    };
    let product =
        |x: FlexTensor, residual| (kernels::linear(&x, &weight, bias, residual, None), ());
    match residual {
        None => record(op, [x], |[x]| product(x, None)),
        // The residual's buffer may become the output (where nothing else holds it).
        Some(r) => record(op, [x, r.into_primitive().tensor()], |[x, r]| {
            product(x, Some(r))
        }),
    }
}
