//! The pre-LayerNorm residual transformer shared by CLIP's image and text encoders.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig2d, conv::Conv2d};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::attention::attention;
use super::deep::{DeepPrompts, replace};
use super::linear::{Then, linear as fused_linear};
use super::parts::{cpu_parts, on_threads, tracks_gradients};
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
        let out = attention(qkv, self.heads, self.causal);
        fused_linear(&self.out_proj, out, Then::Add(residual))
    }
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
        self.forward_prompted(x, &DeepPrompts::none())
    }

    /// [`Self::forward`] with `deep`'s tokens put in place before the blocks after the first.
    ///
    /// # Panics
    /// If `deep` has tokens for as many blocks as the stack has, or more (the first block's are
    /// the input's own): the methods check their depth against the encoders when they are built.
    pub fn forward_prompted(&self, x: Tensor<B, 3>, deep: &DeepPrompts<B>) -> Tensor<B, 3> {
        assert!(
            deep.layers.is_empty() || deep.layers.len() < self.blocks.len(),
            "deep prompts for {} layers after the first, but the stack has {} layers",
            deep.layers.len(),
            self.blocks.len()
        );
        let tokens = deep.per_sequence(&x);
        let parts = self.concurrent_parts(&x);
        if parts == 1 {
            return self.forward_serial(x, deep.start, tokens);
        }
        let jobs = part_inputs(x, tokens, parts);
        let outputs = on_threads(jobs, |(x, tokens)| {
            self.forward_serial(x, deep.start, tokens)
        });
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

    /// The blocks over the whole of `x`, in this thread, `tokens[k - 1]` put at `start..` before
    /// block `k`.
    fn forward_serial(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        tokens: Vec<Tensor<B, 3>>,
    ) -> Tensor<B, 3> {
        let mut tokens = tokens.into_iter();
        self.blocks.iter().enumerate().fold(x, |x, (i, block)| {
            let replacing = if i == 0 { None } else { tokens.next() };
            let x = match replacing {
                Some(t) => replace(x, start, t),
                None => x,
            };
            block.forward(x)
        })
    }
}

/// `x` and every layer's token copies cut into `parts` along the batch, each part with its own
/// rows of them, all in one autodiff graph before any thread starts.
///
/// Burn's autodiff keeps separately recorded tensors (the input, each layer's prompt) in graphs
/// of their own and merges two when an operation first combines them; a merge on one thread while
/// another records into the graph being merged loses that thread's nodes, and with them the
/// prompts' gradients through its part. Joined here, in one concatenation the parts then slice,
/// the threads only ever add to the one graph.
fn part_inputs<B: Backend>(
    x: Tensor<B, 3>,
    tokens: Vec<Tensor<B, 3>>,
    parts: usize,
) -> Vec<(Tensor<B, 3>, Vec<Tensor<B, 3>>)> {
    if tokens.is_empty() {
        return x
            .chunk(parts, 0)
            .into_iter()
            .map(|x| (x, Vec::new()))
            .collect();
    }
    let seq = x.dims()[1];
    let lengths: Vec<usize> = tokens.iter().map(|t| t.dims()[1]).collect();
    let joined = Tensor::cat([vec![x], tokens].concat(), 1);
    joined
        .chunk(parts, 0)
        .into_iter()
        .map(|part| {
            let mut at = seq;
            let tokens = lengths
                .iter()
                .map(|&n| {
                    at += n;
                    part.clone().narrow(1, at - n, n)
                })
                .collect();
            (part.narrow(1, 0, seq), tokens)
        })
        .collect()
}
