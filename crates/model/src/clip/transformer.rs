//! The pre-LayerNorm residual transformer shared by CLIP's image and text encoders.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig2d, conv::Conv2d};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, activation};

use super::cpu_kernels::packed_attention;
use super::cpu_linear::{Then, linear as fused_linear};
use crate::config::Activation;
use crate::precision::norm;
use crate::weights::{StateDict, WeightsError};

/// Takes a tensor from the state dict into a parameter on `device`, checking its shape.
pub(crate) fn param<B: Backend, const D: usize>(
    state: &mut StateDict,
    name: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Param<Tensor<B, D>>, WeightsError> {
    let data = state.take(name, &shape)?;
    Ok(Param::from_tensor(tensor_from(data, device)))
}

/// Builds a float tensor in the backend's float type, whatever precision the checkpoint stored.
pub(crate) fn tensor_from<B: Backend, const D: usize>(
    data: TensorData,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(data.convert::<f32>(), device)
}

/// A LayerNorm whose scale and shift come from `{prefix}.weight` and `{prefix}.bias`.
pub(crate) fn layer_norm<B: Backend>(
    state: &mut StateDict,
    prefix: &str,
    width: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>, WeightsError> {
    let mut norm = LayerNormConfig::new(width).with_epsilon(eps).init(device);
    norm.gamma = param(state, &format!("{prefix}.weight"), [width], device)?;
    norm.beta = Some(param(state, &format!("{prefix}.bias"), [width], device)?);
    Ok(norm)
}

/// A linear layer from a PyTorch `[out, in]` weight (transposed into Burn's `[in, out]`) and bias,
/// named `{prefix}weight` and `{prefix}bias`.
pub(crate) fn linear<B: Backend>(
    state: &mut StateDict,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>, WeightsError> {
    let weight: Tensor<B, 2> = tensor_from(
        state.take(&format!("{prefix}weight"), &[d_out, d_in])?,
        device,
    );
    let bias = param(state, &format!("{prefix}bias"), [d_out], device)?;
    // Stored transposed, not as a transposed view: a strided weight is copied at every use.
    let weight = Tensor::from_data(weight.transpose().into_data(), device);
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias: Some(bias),
    })
}

/// The patch embedding: a bias-free convolution whose stride equals its kernel.
pub(crate) fn patch_embedding<B: Backend>(
    state: &mut StateDict,
    name: &str,
    width: usize,
    patch: usize,
    device: &B::Device,
) -> Result<Conv2d<B>, WeightsError> {
    Ok(Conv2d {
        weight: param(state, name, [width, 3, patch, patch], device)?,
        bias: None,
        stride: [patch, patch],
        kernel_size: [patch, patch],
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Valid,
    })
}

/// Multi-head self-attention with OpenAI's packed `[q; k; v]` input projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    in_proj: Linear<B>,
    out_proj: Linear<B>,
    heads: usize,
    causal: bool,
}

/// Whether `B` is Burn's CPU backend (burn-flex, with or without autodiff), which the CPU-specific
/// paths below are for.
pub(crate) fn cpu_backend<B: Backend>(device: &B::Device) -> bool {
    B::name(device).contains("flex")
}

/// Into how many parts a batch of `batch` independent items is cut so that each runs on a thread
/// of its own: one per CPU thread (rayon's count, so `RAYON_NUM_THREADS` applies) on Burn's CPU
/// backend, whose elementwise operations (activations, copies, residual adds) run on one core
/// each, so that one sequence of them per thread keeps every core busy; only its matmuls, softmax
/// and LayerNorm spread over the cores on their own. A GPU backend queues work asynchronously and
/// gets one part.
pub fn cpu_parts<B: Backend>(device: &B::Device, batch: usize) -> usize {
    if !cpu_backend::<B>(device) {
        return 1;
    }
    rayon::current_num_threads().min(batch).max(1)
}

/// Whether attention through Burn's operations (autodiff on the CPU) runs as batched matmuls and
/// a softmax rather than Burn's fused attention: on Burn's CPU backend the fused kernel works
/// through the heads one after the other, on one core, after copying q, k and v into head-major
/// order, while its matmuls and softmax use every core and read q, k and v where they lie. GPU
/// backends keep the fused (flash) kernel.
fn unfused_attention<B: Backend>(device: &B::Device) -> bool {
    cpu_backend::<B>(device)
}

/// Runs `job` on each item on a thread of its own and returns the results in order (a panic in a
/// job is re-raised here): how a batch cut by [`cpu_parts`] runs.
pub fn on_threads<T: Send, R: Send>(items: Vec<T>, job: impl Fn(T) -> R + Sync) -> Vec<R> {
    let job = &job;
    std::thread::scope(|scope| {
        let running: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || job(item)))
            .collect();
        running
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Whether autodiff tracks any float parameter of `module` (visual LN tuning trains the image
/// encoder's LayerNorms).
pub fn tracks_gradients<B: Backend, M: Module<B>>(module: &M) -> bool {
    let mut tracked = TracksGradients(false);
    module.visit(&mut tracked);
    tracked.0
}

/// Finds whether any float parameter of a module is tracked by autodiff.
struct TracksGradients(bool);

impl<B: Backend> ModuleVisitor<B> for TracksGradients {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.val().is_require_grad();
    }
}

impl<B: Backend> SelfAttention<B> {
    fn load(
        state: &mut StateDict,
        prefix: &str,
        width: usize,
        heads: usize,
        causal: bool,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            in_proj: linear(
                state,
                &format!("{prefix}.in_proj_"),
                width,
                3 * width,
                device,
            )?,
            out_proj: linear(state, &format!("{prefix}.out_proj."), width, width, device)?,
            heads,
            causal,
        })
    }

    /// `residual + attention(x)`, `x` and `residual` being `[batch, seq, width]`.
    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let qkv = fused_linear(&self.in_proj, x, Then::Nothing);
        let out = packed_attention(qkv, self.heads, self.causal)
            .unwrap_or_else(|qkv| attention_by_operations(qkv, self.heads, self.causal));
        fused_linear(&self.out_proj, out, Then::Add(residual))
    }
}

/// Multi-head attention through Burn's operations, from the packed projections `qkv`
/// (`[batch, seq, 3·width]`) to `[batch, seq, width]`, as [`packed_attention`] computes it on the
/// host: under autodiff, for other precisions and on GPU backends.
pub(crate) fn attention_by_operations<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    let [batch, seq, packed] = qkv.dims();
    let width = packed / 3;
    let head_dim = width / heads;
    let out = if unfused_attention::<B>(&qkv.device()) {
        unfused(qkv, [batch, seq, heads, head_dim], causal)
    } else {
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * width, width)
                .reshape([batch, seq, heads, head_dim])
                .swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        attention(split(0), split(1), split(2), None, None, options)
    };
    out.swap_dims(1, 2).reshape([batch, seq, width])
}

/// `softmax(q kᵀ / √d) v` per head from the packed projections `qkv` (`[batch, seq, 3·width]`), as
/// `[batch, heads, seq, head_dim]`, through batched matmuls and a softmax. q, k and v stay views
/// into `qkv`; the softmax runs in f32, as in the fused kernel.
fn unfused<B: Backend>(
    qkv: Tensor<B, 3>,
    [batch, seq, heads, head_dim]: [usize; 4],
    causal: bool,
) -> Tensor<B, 4> {
    let dtype = qkv.dtype();
    let device = qkv.device();
    // [batch, seq, 3, heads, head_dim] seen as [3, batch, heads, seq, head_dim].
    let qkv = qkv
        .reshape([batch, seq, 3, heads, head_dim])
        .permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1);
    let mut scores = part(0)
        .matmul(part(1).swap_dims(3, 4))
        .cast(FloatDType::F32)
        .mul_scalar((head_dim as f32).powf(-0.5));
    if causal {
        let future = Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, &device);
        let bias = Tensor::<B, 2>::zeros([seq, seq], &device).mask_fill(future, f32::NEG_INFINITY);
        scores = scores + bias.unsqueeze::<5>();
    }
    activation::softmax(scores, 4)
        .cast(dtype)
        .matmul(part(2))
        .reshape([batch, heads, seq, head_dim])
}

/// One pre-LN residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    /// LayerNorm before attention (trainable in MoCoOp's visual LN tuning).
    pub ln_1: LayerNorm<B>,
    attn: SelfAttention<B>,
    /// LayerNorm before the MLP (trainable in MoCoOp's visual LN tuning).
    pub ln_2: LayerNorm<B>,
    c_fc: Linear<B>,
    c_proj: Linear<B>,
    #[module(skip)]
    activation: Activation,
    /// The LayerNorms' epsilon.
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> ResidualBlock<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // Each LayerNorm takes a clone of x and lets go of it before the residual add, which can
        // then write into x's own buffer.
        let x = self.attn.forward(norm(&self.ln_1, self.eps, x.clone()), x);
        let hidden = fused_linear(
            &self.c_fc,
            norm(&self.ln_2, self.eps, x.clone()),
            Then::Activate(self.activation),
        );
        fused_linear(&self.c_proj, hidden, Then::Add(x))
    }
}

/// Geometry of one residual stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackSpec {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub causal: bool,
    pub activation: Activation,
    pub eps: f64,
}

/// A stack of residual blocks.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// The blocks, in order.
    pub blocks: Vec<ResidualBlock<B>>,
}

impl<B: Backend> Transformer<B> {
    /// Loads `{prefix}{i}.…` blocks from an OpenAI-layout state dict.
    pub(crate) fn load(
        state: &mut StateDict,
        prefix: &str,
        spec: StackSpec,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let width = spec.width;
        let blocks = (0..spec.layers)
            .map(|i| {
                let p = format!("{prefix}{i}");
                // The MLP width is read off the checkpoint (4x for every released CLIP).
                let hidden = state
                    .shape(&format!("{p}.mlp.c_fc.weight"))
                    .map_or(4 * width, |shape| shape[0]);
                Ok(ResidualBlock {
                    ln_1: layer_norm(state, &format!("{p}.ln_1"), width, spec.eps, device)?,
                    attn: SelfAttention::load(
                        state,
                        &format!("{p}.attn"),
                        width,
                        spec.heads,
                        spec.causal,
                        device,
                    )?,
                    ln_2: layer_norm(state, &format!("{p}.ln_2"), width, spec.eps, device)?,
                    c_fc: linear(state, &format!("{p}.mlp.c_fc."), width, hidden, device)?,
                    c_proj: linear(state, &format!("{p}.mlp.c_proj."), hidden, width, device)?,
                    activation: spec.activation,
                    eps: spec.eps,
                })
            })
            .collect::<Result<_, WeightsError>>()?;
        Ok(Self { blocks })
    }

    /// `x`: `[batch, seq, width]`. Sequences do not interact, so on the CPU the batch may be cut
    /// into parts run on threads of their own ([`Self::concurrent_parts`]); the result is the
    /// same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let parts = self.concurrent_parts(&x);
        if parts == 1 {
            return self.forward_serial(x);
        }
        let outputs = on_threads(x.chunk(parts, 0), |part| self.forward_serial(part));
        Tensor::cat(outputs, 0)
    }

    /// Into how many parts along the batch `x` is cut, each run on a thread of its own
    /// ([`cpu_parts`]).
    ///
    /// Not when autodiff tracks a parameter of the stack (visual LN tuning): Burn's autodiff
    /// graph, recorded from several threads at once, sums that parameter's gradient over the parts
    /// in an order that varies from run to run, and a resumed run must repeat the uninterrupted one
    /// bit for bit. (Training splits its LN-tuned image side itself, with one graph per part:
    /// `mocoop_train`'s `image_parts`.) A tracked input, such as the prompts on a training step's
    /// text side, is split: each part's gradient covers rows of its own, so their sum is exact in
    /// any order.
    fn concurrent_parts(&self, x: &Tensor<B, 3>) -> usize {
        let device = x.device();
        if B::ad_enabled(&device) && tracks_gradients(self) {
            return 1;
        }
        cpu_parts::<B>(&device, x.dims()[0])
    }

    /// The blocks over the whole of `x`, in this thread.
    fn forward_serial(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}
