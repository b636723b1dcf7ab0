//! CLIP's causal text encoder, over token ids or over already-embedded sequences (soft prompts).

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};

use super::deep::DeepPrompts;
use super::sequences::{add_positions, index_tensor};
use super::transformer::{StackSpec, Transformer, layer_norm, param};
use crate::config::ClipConfig;
use crate::precision::{dtype_of, norm};
use crate::weights::{StateDict, WeightsError};

/// Token embedding → positions → causal blocks → `ln_final` → hidden state at the EOT token →
/// projection.
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    token_embedding: Param<Tensor<B, 2>>,
    positional_embedding: Param<Tensor<B, 2>>,
    transformer: Transformer<B>,
    ln_final: LayerNorm<B>,
    text_projection: Param<Tensor<B, 2>>,
    /// The LayerNorms' epsilon.
    #[module(skip)]
    eps: f64,
}

/// Position of the end-of-text token in each row: the first position of the row's largest id, as
/// `argmax` does in the reference code (the EOT id, 49407, is the largest in the vocabulary).
pub fn eot_positions(tokens: &[Vec<u32>]) -> Vec<usize> {
    tokens
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, 0),
                    |(best, max), (i, &t)| {
                        if t > max { (i, t) } else { (best, max) }
                    },
                )
                .0
        })
        .collect()
}

impl<B: Backend> TextEncoder<B> {
    /// Takes the text tensors of an OpenAI-layout state dict.
    pub(crate) fn load(
        state: &mut StateDict,
        config: &ClipConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let t = &config.text;
        let eps = config.layer_norm_eps;
        Ok(Self {
            token_embedding: param(
                state,
                "token_embedding.weight",
                [t.vocab_size, t.width],
                device,
            )?,
            positional_embedding: param(
                state,
                "positional_embedding",
                [t.context_length, t.width],
                device,
            )?,
            transformer: Transformer::load(
                state,
                "transformer.resblocks.",
                StackSpec {
                    width: t.width,
                    layers: t.layers,
                    heads: t.heads,
                    causal: true,
                    activation: config.activation,
                    eps,
                },
                device,
            )?,
            ln_final: layer_norm(state, "ln_final", t.width, eps, device)?,
            text_projection: param(
                state,
                "text_projection",
                [t.width, config.embed_dim],
                device,
            )?,
            eps,
        })
    }

    /// The float type the encoder computes in (that of its weights).
    pub fn compute_dtype(&self) -> FloatDType {
        dtype_of(&self.positional_embedding)
    }

    /// Width of token embeddings (what a soft prompt's context vectors must have).
    pub fn width(&self) -> usize {
        self.token_embedding.dims()[1]
    }

    /// Number of positional embeddings: the longest sequence the encoder takes.
    pub fn context_length(&self) -> usize {
        self.positional_embedding.dims()[0]
    }

    /// Looks up token embeddings: `[batch, seq]` ids → `[batch, seq, width]`, in f32 whatever the
    /// encoder's precision (the table is never cast: soft prompts are built from it and train in
    /// f32).
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.token_embedding.val(), tokens)
    }

    /// Text features (not normalised, f32) of embedded sequences `[batch, seq, width]` whose EOT tokens sit
    /// at `eot[i]`. `seq` may be anything up to the context length: because attention is causal and
    /// only the EOT position is read, sequences cut right after the batch's last EOT give exactly the
    /// features of the full-length ones.
    pub fn forward_embedded(&self, x: Tensor<B, 3>, eot: &[usize]) -> Tensor<B, 2> {
        self.forward_prompted(x, eot, &DeepPrompts::none())
    }

    /// [`Self::forward_embedded`] with deep prompts: `deep`'s tokens replace the hidden states at
    /// their positions before each of the blocks after the first (the learnable context positions
    /// of the input, which must lie before every EOT; the cut after the last EOT stays exact).
    pub fn forward_prompted(
        &self,
        x: Tensor<B, 3>,
        eot: &[usize],
        deep: &DeepPrompts<B>,
    ) -> Tensor<B, 2> {
        let [batch, seq, width] = x.dims();
        assert_eq!(eot.len(), batch, "one EOT position per sequence");
        assert!(
            eot.iter().all(|&p| p < seq),
            "EOT positions {eot:?} must lie inside the {seq} given positions"
        );
        assert!(
            deep.layers.is_empty() || eot.iter().all(|&p| p >= deep.start + deep.tokens()),
            "deep prompts at {}..{} must lie before every EOT ({eot:?})",
            deep.start,
            deep.start + deep.tokens()
        );
        let positions = self.positional_embedding.val().narrow(0, 0, seq);
        let x = x.cast(self.compute_dtype());
        let x = self
            .transformer
            .forward_prompted(add_positions(x, positions), deep);
        let x = norm(&self.ln_final, self.eps, x).reshape([batch * seq, width]);
        let rows: Vec<usize> = eot.iter().enumerate().map(|(i, &p)| i * seq + p).collect();
        let index = index_tensor(&rows, &x.device());
        x.select(0, index)
            .matmul(self.text_projection.val())
            .cast(FloatDType::F32)
    }

    /// Number of residual blocks (the deepest a deep prompt can reach).
    pub fn layers(&self) -> usize {
        self.transformer.blocks.len()
    }

    /// Text features (not normalised) of tokenised texts (rows of equal length, e.g. 77), run only
    /// up to the longest EOT position of the batch.
    pub fn forward_tokens(&self, tokens: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2> {
        let eot = eot_positions(tokens);
        let seq = eot.iter().max().map_or(1, |&m| m + 1);
        let ids: Vec<i64> = tokens
            .iter()
            .flat_map(|row| row[..seq].iter().map(|&t| t as i64))
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [tokens.len(), seq]), device);
        self.forward_embedded(self.embed(ids), &eot)
    }
}
