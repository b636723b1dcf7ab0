//! CLIP's ViT image encoder (one of the towers of [`super::vision::VisionEncoder`]).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use super::deep::DeepPrompts;
use super::sequences::add_positions;
use super::transformer::{StackSpec, Transformer, layer_norm, param, patch_embedding};
use crate::config::ClipConfig;
use crate::precision::{dtype_of, norm};
use crate::weights::{StateDict, WeightsError};

/// Patch embedding → class token → positions → `ln_pre` → blocks → `ln_post` on the class token →
/// projection.
#[derive(Module, Debug)]
pub struct VitEncoder<B: Backend> {
    conv1: Conv2d<B>,
    class_embedding: Param<Tensor<B, 1>>,
    positional_embedding: Param<Tensor<B, 2>>,
    ln_pre: LayerNorm<B>,
    /// The residual blocks (their LayerNorms are what visual LN tuning trains).
    pub transformer: Transformer<B>,
    ln_post: LayerNorm<B>,
    proj: Param<Tensor<B, 2>>,
    image_size: usize,
    /// The LayerNorms' epsilon.
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> VitEncoder<B> {
    /// Takes the `visual.*` tensors of an OpenAI-layout state dict.
    pub(crate) fn load(
        state: &mut StateDict,
        config: &ClipConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let v = &config.vision;
        let eps = config.layer_norm_eps;
        let positions = v.grid_size() * v.grid_size() + 1;
        Ok(Self {
            conv1: patch_embedding(state, "visual.conv1.weight", v.width, v.patch_size, device)?,
            class_embedding: param(state, "visual.class_embedding", [v.width], device)?,
            positional_embedding: param(
                state,
                "visual.positional_embedding",
                [positions, v.width],
                device,
            )?,
            ln_pre: layer_norm(state, "visual.ln_pre", v.width, eps, device)?,
            transformer: Transformer::load(
                state,
                "visual.transformer.resblocks.",
                StackSpec {
                    width: v.width,
                    layers: v.layers,
                    heads: v.heads,
                    causal: false,
                    activation: config.activation,
                    eps,
                },
                device,
            )?,
            ln_post: layer_norm(state, "visual.ln_post", v.width, eps, device)?,
            proj: param(state, "visual.proj", [v.width, config.embed_dim], device)?,
            image_size: v.image_size,
            eps,
        })
    }

    /// Side of the square images this encoder takes.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Width of the residual stream (what a visual prompt token must have).
    pub fn width(&self) -> usize {
        self.class_embedding.dims()[0]
    }

    /// Number of residual blocks (the deepest a deep prompt can reach).
    pub fn layers(&self) -> usize {
        self.transformer.blocks.len()
    }

    /// Image features (not normalised, f32) of preprocessed images `[batch, 3, size, size]`
    /// (checked by [`super::VisionEncoder::forward`]), computed in the type of the encoder's
    /// weights. With `prompts` (`[n, width]` each, VPT-deep and MaPLe), the first are appended to
    /// every sequence after its position embeddings (before `ln_pre`), and each later one takes
    /// their place before the next block. The official code appends them after the patches, VPT's
    /// paper after the class token: the same features, since the blocks treat positions alike and
    /// only the class token is read.
    pub(super) fn forward(&self, images: Tensor<B, 4>, prompts: &[Tensor<B, 2>]) -> Tensor<B, 2> {
        let batch = images.dims()[0];
        let dtype = dtype_of(&self.class_embedding);
        let images = images.cast(dtype);
        let patches = self.conv1.forward(images); // [N, W, G, G]
        let [_, d_model, grid, _] = patches.dims();
        let patches = patches
            .reshape([batch, d_model, grid * grid])
            .swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, d_model])
            .expand([batch, 1, d_model]);
        let mut x = add_positions(
            Tensor::cat(vec![class, patches], 1),
            self.positional_embedding.val(),
        );
        let mut deep = DeepPrompts::none();
        if let Some((first, later)) = prompts.split_first() {
            deep.start = x.dims()[1];
            deep.layers = later.to_vec();
            let n = first.dims()[0];
            let first = first.clone().cast(dtype).unsqueeze_dim::<3>(0);
            x = Tensor::cat(vec![x, first.expand([batch, n, d_model])], 1);
        }
        let x = self
            .transformer
            .forward_prompted(norm(&self.ln_pre, self.eps, x), &deep);
        let cls = x.narrow(1, 0, 1).reshape([batch, d_model]);
        norm(&self.ln_post, self.eps, cls)
            .matmul(self.proj.val())
            .cast(FloatDType::F32)
    }
}
