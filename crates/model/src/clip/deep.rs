//! Deep prompts (VPT-deep, IVLP, MaPLe): learned tokens that take the place of the hidden states
//! at fixed positions of every sequence before each of a stack's first blocks, shared by all the
//! sequences of a batch.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Learned tokens for the blocks after the first: before block `k` (`1 ≤ k ≤ layers.len()`), the
/// hidden states at positions `start .. start + n` of every sequence are replaced by
/// `layers[k - 1]` (`[n, width]`). The first block sees the caller's own tokens there (the input
/// prompts); the blocks after `layers.len()` see what the previous block made of them.
///
/// The positions sit before every sequence's EOT on the text side, so a batch cut after its last
/// EOT (`prompt::ClassPrompts`' buckets) keeps them all; on the image side they are the
/// sequence's last `n` positions.
#[derive(Debug, Clone)]
pub struct DeepPrompts<B: Backend> {
    /// The first replaced position.
    pub start: usize,
    /// The tokens of blocks `1..=layers.len()`, each `[n, width]` (f32; cast to the stack's type).
    pub layers: Vec<Tensor<B, 2>>,
}

impl<B: Backend> DeepPrompts<B> {
    /// No replacement anywhere: the stack's plain forward pass.
    pub fn none() -> Self {
        Self {
            start: 0,
            layers: Vec::new(),
        }
    }

    /// Tokens per replaced layer (0 without any).
    pub fn tokens(&self) -> usize {
        self.layers.first().map_or(0, |t| t.dims()[0])
    }

    /// Every layer's tokens repeated for `batch` sequences (`[batch, n, width]`) in the type of
    /// `like`: one broadcast per layer, whose backward pass sums the sequences' gradients in one
    /// operation, so that a batch cut into parts (each with its own rows of these copies) gives
    /// the same gradient in any order the parts finish.
    pub(crate) fn per_sequence(&self, like: &Tensor<B, 3>) -> Vec<Tensor<B, 3>> {
        let [batch, _, width] = like.dims();
        self.layers
            .iter()
            .map(|tokens| {
                let n = tokens.dims()[0];
                tokens
                    .clone()
                    .cast(like.dtype())
                    .unsqueeze_dim::<3>(0)
                    .expand([batch, n, width])
            })
            .collect()
    }
}

/// `x` (`[batch, seq, width]`) with positions `start .. start + n` replaced by `tokens`
/// (`[batch, n, width]`).
///
/// # Panics
/// If the positions do not lie inside the sequences or the widths differ: the methods check their
/// prompt lengths against the encoders when they are built.
pub(crate) fn replace<B: Backend>(
    x: Tensor<B, 3>,
    start: usize,
    tokens: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [batch, seq, width] = x.dims();
    let n = tokens.dims()[1];
    assert!(
        start + n <= seq && tokens.dims()[2] == width,
        "deep prompt tokens {:?} at position {start} do not fit sequences {:?}",
        tokens.dims(),
        x.dims()
    );
    x.slice_assign([0..batch, start..start + n, 0..width], tokens)
}

/// The tiny geometry with three blocks in each tower, so that deep prompts reach two layers past
/// the first (for the tests of `clip` and `prompt`).
#[cfg(test)]
pub(crate) fn three_layer_clip<B: Backend>(seed: u64) -> super::Clip<B> {
    use crate::config::{ClipConfig, TextConfig, VisionConfig};
    let tiny = ClipConfig::tiny();
    let config = ClipConfig {
        vision: VisionConfig {
            layers: 3,
            ..tiny.vision.clone()
        },
        text: TextConfig {
            layers: 3,
            ..tiny.text.clone()
        },
        ..tiny
    };
    config.init(seed, &Default::default()).expect("a tiny CLIP")
}
