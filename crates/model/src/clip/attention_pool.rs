//! The attention pooling that ends OpenAI's ModifiedResNet (`AttentionPool2d`): the mean of the
//! last feature map's positions is prepended as a token, every token gets a learned position, and
//! that first token attends over all of them with its own multi-head attention (separate q, k and
//! v projections, and `c_proj` into the joint embedding space).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;

use super::sequences::add_positions;
use super::transformer::{linear, param};
use crate::config::VisionConfig;
use crate::weights::{StateDict, WeightsError};

/// Mean token → positions → one attention query from the mean token → `c_proj`.
#[derive(Module, Debug)]
pub struct AttentionPool<B: Backend> {
    positional_embedding: Param<Tensor<B, 2>>,
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    c_proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> AttentionPool<B> {
    /// `visual.attnpool.*` over `channels` channels of a `vision.grid_size()` square map, into
    /// `embed_dim`.
    pub(super) fn load(
        state: &mut StateDict,
        channels: usize,
        vision: &VisionConfig,
        embed_dim: usize,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let grid = vision.grid_size();
        let p = "visual.attnpool.";
        Ok(Self {
            positional_embedding: param(
                state,
                &format!("{p}positional_embedding"),
                [grid * grid + 1, channels],
                device,
            )?,
            q_proj: linear(state, &format!("{p}q_proj."), channels, channels, device)?,
            k_proj: linear(state, &format!("{p}k_proj."), channels, channels, device)?,
            v_proj: linear(state, &format!("{p}v_proj."), channels, channels, device)?,
            c_proj: linear(state, &format!("{p}c_proj."), channels, embed_dim, device)?,
            heads: vision.heads,
        })
    }

    /// The pooled features `[N, embed_dim]` of a feature map `[N, C, H, W]`.
    pub(super) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, channels, height, width] = x.dims();
        let tokens = x.reshape([batch, channels, height * width]).swap_dims(1, 2);
        let mean = tokens.clone().mean_dim(1);
        let x = add_positions(
            Tensor::cat(vec![mean, tokens], 1),
            self.positional_embedding.val(),
        );
        let length = x.dims()[1];
        let (heads, head) = (self.heads, channels / self.heads);
        let split =
            |t: Tensor<B, 3>, rows: usize| t.reshape([batch, rows, heads, head]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone().narrow(1, 0, 1)), 1);
        let k = split(self.k_proj.forward(x.clone()), length);
        let v = split(self.v_proj.forward(x), length);
        let scores = q.matmul(k.swap_dims(2, 3)) * (head as f64).powf(-0.5);
        let pooled = softmax(scores, 3).matmul(v); // [N, heads, 1, head]
        self.c_proj.forward(pooled.reshape([batch, channels]))
    }
}
