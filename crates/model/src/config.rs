//! CLIP architecture hyper-parameters, read off a checkpoint rather than assumed.

use serde::{Deserialize, Serialize};

/// The MLP non-linearity of the residual blocks.
///
/// OpenAI's released weights were trained with QuickGELU; open_clip's non-"quickgelu" configs and
/// some transformers configs use exact (erf) GELU. Using the wrong one changes every feature, so it is
/// part of the configuration and never guessed silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, as in OpenAI's CLIP.
    #[default]
    QuickGelu,
    /// Exact GELU, `x * Φ(x)`.
    Gelu,
}

/// QuickGELU's slope, the 1.702 of `x · σ(1.702 x)`: one constant for Burn's operations
/// (`clip::linear`) and the CPU host loops (`cpu::slices`).
pub(crate) const QUICK_GELU_SLOPE: f32 = 1.702;

impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "quick_gelu" | "quickgelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(format!(
                "unknown activation '{other}': expected 'quick_gelu' or 'gelu'"
            )),
        }
    }
}

/// Sizes of the ViT image encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Residual stream width.
    pub width: usize,
    /// Number of residual blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Side of the square patches (and stride of the patch embedding).
    pub patch_size: usize,
    /// Side of the square input image.
    pub image_size: usize,
}

impl VisionConfig {
    /// Patches per side of the input image.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// Sizes of the causal text encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Residual stream width (also the token embedding width).
    pub width: usize,
    /// Number of residual blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Number of positional embeddings (77 for every released CLIP).
    pub context_length: usize,
    /// Rows of the token embedding.
    pub vocab_size: usize,
}

/// Everything needed to build a CLIP model of any size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Width of the shared image-text embedding space.
    pub embed_dim: usize,
    /// Image encoder sizes.
    pub vision: VisionConfig,
    /// Text encoder sizes.
    pub text: TextConfig,
    /// MLP activation of every residual block.
    pub activation: Activation,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

/// Heads for a residual width when a checkpoint does not say: OpenAI's `build_model` rule of 64-wide
/// heads (at least one, so that small custom models still build).
pub fn default_heads(width: usize) -> usize {
    (width / 64).max(1)
}

impl ClipConfig {
    /// ViT-B/16 geometry (the reference size of the benchmarks), with OpenAI's QuickGELU.
    pub fn vit_b_16() -> Self {
        Self {
            embed_dim: 512,
            vision: VisionConfig {
                width: 768,
                layers: 12,
                heads: 12,
                patch_size: 16,
                image_size: 224,
            },
            text: TextConfig {
                width: 512,
                layers: 12,
                heads: 8,
                context_length: 77,
                vocab_size: 49408,
            },
            activation: Activation::QuickGelu,
            layer_norm_eps: default_layer_norm_eps(),
        }
    }
}
