//! The host loops of `cpu_kernels` as operations of Burn's autodiff on its CPU backend, each with
//! a backward pass of its own, so that training gets them too: the image encoder under visual LN
//! tuning and the prompts' way through the text encoder.
//!
//! Burn's autodiff records a linear layer as a product and a bias add (and the residual add
//! after it as one more), an activation as several operations (QuickGELU: a scaling, a sigmoid
//! and a product, each with its own pass and buffer forward and backward), attention as head
//! copies, products and a softmax, and LayerNorm as its generic decomposition, all of them
//! computed again or walked element by element in the backward pass. Here each is one operation
//! whose backward pass is one host loop (activations; LayerNorm, one pass per row) or, per
//! sequence and head, a softmax computed again and four strided products (attention).
//!
//! The model is generic over its backend; these operations apply when that backend is
//! `Autodiff<Flex>` (what `mocoop` trains with on the CPU), which [`into_cpu_autodiff`] finds
//! out at run time.

use std::any::Any;
use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::ModuleOps;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use super::cpu_kernels::{
    activated, activation_grads, attention_grads, attention_values, layer_norm_grads,
};
use super::cpu_linear::{fused, input_grad};
use crate::config::Activation;

/// Burn's CPU backend under autodiff.
type CpuAutodiff = Autodiff<Flex>;

/// `value` as a `To`, if it is one.
pub(super) fn cast<From: 'static, To: 'static>(value: From) -> Result<To, From> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<To>>() {
        Some(to) => Ok(to.take().expect("the slot was just filled")),
        None => Err(slot.expect("a failed downcast leaves the slot as it was")),
    }
}

/// `x` as a tensor of the CPU backend under autodiff holding f32 values, or `x` back.
pub(super) fn into_cpu_autodiff<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<CpuAutodiff, D>, Tensor<B, D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    match x.into_primitive() {
        TensorPrimitive::Float(p) => cast(p)
            .map(|p| Tensor::from_primitive(TensorPrimitive::Float(p)))
            .map_err(|p| Tensor::from_primitive(TensorPrimitive::Float(p))),
        quantized => Err(Tensor::from_primitive(quantized)),
    }
}

/// A result of the operations here back in the caller's backend, which is the CPU backend under
/// autodiff (its input came from [`into_cpu_autodiff`]).
pub(super) fn from_cpu_autodiff<B: Backend, const D: usize>(
    x: Tensor<CpuAutodiff, D>,
) -> Tensor<B, D> {
    let p = x.into_primitive().tensor();
    let p = cast(p).unwrap_or_else(|_| unreachable!("the input was of the CPU autodiff backend"));
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `t`, or a copy of it with its f32 values in one contiguous run if they are not.
pub(super) fn contiguous(t: &FlexTensor) -> Cow<'_, FlexTensor> {
    match t.as_slice::<f32>() {
        Some(_) => Cow::Borrowed(t),
        None => Cow::Owned(t.to_contiguous()),
    }
}

/// The f32 values of a tensor made [`contiguous`].
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor has an f32 slice")
}

/// The autodiff primitive of a tensor.
type Primitive = <CpuAutodiff as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

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
            let mut grad = grad.into_data();
            let grad_values = grad
                .as_mut_slice::<f32>()
                .expect("an f32 gradient holds f32 values");
            activation_grads(self.0, values(&contiguous(&input)), grad_values);
            FlexTensor::from_data(grad)
        });
    }
}

/// `curve` over `x` as one autodiff operation.
pub(super) fn activate<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    curve: Activation,
) -> Tensor<CpuAutodiff, D> {
    let shape = x.shape();
    record_unary(ActivationOp(curve), x, |x| {
        let out = activated(curve, values(&contiguous(x)));
        FlexTensor::from_data(TensorData::new(out, shape))
    })
}

/// Multi-head attention from the packed projections as one autodiff operation (see
/// `cpu_kernels::packed_attention`).
#[derive(Debug)]
struct Attention {
    /// The input's `[batch, seq, 3·width]`.
    dims: [usize; 3],
    heads: usize,
    causal: bool,
}

impl Backward<Flex, 1> for Attention {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let qkv = ops.state;
        let Self {
            dims,
            heads,
            causal,
        } = self;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let (qkv, grad) = (contiguous(&qkv), contiguous(&grad));
            let qkv_grads = attention_grads(values(&qkv), values(&grad), dims, heads, causal);
            FlexTensor::from_data(TensorData::new(qkv_grads, dims))
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
    let dims = qkv.dims();
    let [batch, seq, packed] = dims;
    let op = Attention {
        dims,
        heads,
        causal,
    };
    record_unary(op, qkv, |qkv| {
        let out = attention_values(values(&contiguous(qkv)), dims, heads, causal);
        FlexTensor::from_data(TensorData::new(out, [batch, seq, packed / 3]))
    })
}

/// LayerNorm as one autodiff operation with inputs x, gamma and beta.
#[derive(Debug)]
struct Norm {
    /// x's shape.
    shape: Vec<usize>,
    eps: f32,
}

impl Backward<Flex, 3> for Norm {
    /// x and gamma.
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x, gamma] = ops.state;
        let grad = grads.consume::<Flex>(&ops.node);
        let [x, gamma, grad] = [&x, &gamma, &grad].map(contiguous);
        let all = layer_norm_grads(values(&x), values(&gamma), values(&grad), self.eps);
        let width = all.gamma.len();
        let [x_node, gamma_node, beta_node] = ops.parents;
        let parts = [
            (x_node, all.x, self.shape),
            (gamma_node, all.gamma, vec![width]),
            (beta_node, all.beta, vec![width]),
        ];
        for (node, values, shape) in parts {
            if let Some(node) = node {
                let values = FlexTensor::from_data(TensorData::new(values, shape));
                grads.register::<Flex>(node.id, values);
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
    let shape = x.dims().to_vec();
    let inputs = [
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    ];
    let op = Norm {
        shape,
        eps: eps as f32,
    };
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
            input_grad(&grad, &self.weight)
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
            |grad| input_grad(&grad, &self.weight),
            |grad| grad,
        );
    }
}

/// `residual + x · weight + bias` (`x`: `[batch, seq, d_in]`, `weight`: `[d_in, d_out]`, `bias`:
/// `[1, d_out]`) as one autodiff operation, the weight and bias being frozen: forward,
/// `cpu_linear`'s fused product.
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
    let product = |x: FlexTensor, residual| (fused(&x, &weight, bias, residual, None), ());
    match residual {
        None => record(op, [x], |[x]| product(x, None)),
        // The residual's buffer may become the output (where nothing else holds it).
        Some(r) => record(op, [x, r.into_primitive().tensor()], |[x, r]| {
            product(x, Some(r))
        }),
    }
}
