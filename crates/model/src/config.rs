//! CLIP architecture hyper-parameters, read off a checkpoint rather than assumed.

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;

/// The MLP non-linearity of the residual blocks.
///
/// OpenAI's released weights were trained with QuickGELU; open_clip's non-"quickgelu" configs and
/// some transformers configs use exact (erf) GELU. Using the wrong one changes every feature, so it is
/// part of the configuration and never guessed silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, as in OpenAI's CLIP.
    #[default]
    #[value(name = "quick_gelu", alias = "quickgelu", alias = "quick-gelu")]
    QuickGelu,
    /// Exact GELU, `x * Φ(x)`.
    Gelu,
}

/// QuickGELU's slope, the 1.702 of `x · σ(1.702 x)`: one constant for Burn's operations
/// (`clip::linear`) and the CPU host loops (`cpu::slices`).
pub(crate) const QUICK_GELU_SLOPE: f32 = 1.702;

/// The spellings of the command line, any case: transformers' `config.json` names the activation
/// too (`hidden_act`).
impl std::str::FromStr for Activation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown activation '{s}': expected 'quick_gelu' or 'gelu'"))
    }
}

/// Sizes of the image encoder: a ViT, or OpenAI's ModifiedResNet when
/// [`resnet_stages`](Self::resnet_stages) is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Residual stream width (a ResNet: the stem's width, `visual.layer1.0.conv1.weight`'s rows).
    pub width: usize,
    /// Number of residual blocks (a ResNet: its bottleneck blocks, all stages together).
    pub layers: usize,
    /// Attention heads per block (a ResNet: of its attention pooling).
    pub heads: usize,
    /// Side of the square patches and stride of the patch embedding (a ResNet: 32, the factor its
    /// stem and stages shrink the image by).
    pub patch_size: usize,
    /// Side of the square input image.
    pub image_size: usize,
    /// Bottleneck blocks of the four stages when the image tower is OpenAI's ModifiedResNet (RN50:
    /// `[3, 4, 6, 3]`); absent for a ViT, and then not written, so that the configurations of
    /// ViT files and runs are written as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resnet_stages: Option<[usize; 4]>,
}

/// The factor by which a ModifiedResNet shrinks its image (a stride-2 stem convolution, a 2×2
/// average pool and three stride-2 stages), its [`VisionConfig::patch_size`].
pub const RESNET_REDUCTION: usize = 32;

impl VisionConfig {
    /// Patches per side of the input image (a ResNet: the side of its last feature map).
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// The sizes of OpenAI's ModifiedResNet of stem width `width` with `stages` bottleneck blocks
    /// per stage for `image_size` px images: OpenAI's `build_model` gives it `width * 32 / 64`
    /// attention-pooling heads (64 wide over the `width * 32` channels of the last stage).
    pub fn resnet(width: usize, stages: [usize; 4], image_size: usize) -> Self {
        Self {
            width,
            layers: stages.iter().sum(),
            heads: width.saturating_mul(RESNET_REDUCTION) / 64,
            patch_size: RESNET_REDUCTION,
            image_size,
            resnet_stages: Some(stages),
        }
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
    /// The image transform the checkpoint expects: CLIP's unless its configuration states another
    /// (open_clip's `preprocess_cfg`). Recorded only when it is not CLIP's, so that native files and
    /// runs of CLIP-preprocessed models are written as before.
    #[serde(default, skip_serializing_if = "Preprocess::is_clip")]
    pub preprocess: Preprocess,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

/// Heads for a residual width when a checkpoint does not say: OpenAI's `build_model` rule of 64-wide
/// heads, or `None` when 64 does not divide the width (the heads must then be stated).
pub fn default_heads(width: usize) -> Option<usize> {
    (width > 0 && width.is_multiple_of(64)).then_some(width / 64)
}

/// Named geometries, in one place (as candle-transformers' CLIP keeps its configurations beside
/// the model). Every preset is OpenAI's CLIP at other sizes: a 77-token context over the
/// 49,408-token BPE vocabulary, QuickGELU and LayerNorm epsilon 1e-5; the derived presets say only
/// what differs from [`ClipConfig::vit_b_16`].
///
/// Why not burn's `#[derive(Config)]`: it writes its own serde impls through a generated copy of
/// the struct that drops field attributes, so `#[serde(default)]` on
/// [`layer_norm_eps`](ClipConfig::layer_norm_eps) would be lost and a native weight file or run
/// whose embedded configuration predates that field would stop loading; its builders also cover
/// only fields with a default, not the nested sizes the callers vary.
impl ClipConfig {
    /// OpenAI's ViT-B/16 (the reference size of the GPU benchmarks).
    pub fn vit_b_16() -> Self {
        Self {
            embed_dim: 512,
            vision: VisionConfig {
                width: 768,
                layers: 12,
                heads: 12,
                patch_size: 16,
                image_size: 224,
                resnet_stages: None,
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
            preprocess: Preprocess::default(),
        }
    }

    /// OpenAI's ViT-B/32: ViT-B/16 in 32 px patches (49 image tokens instead of 196).
    pub fn vit_b_32() -> Self {
        let b16 = Self::vit_b_16();
        Self {
            vision: VisionConfig {
                patch_size: 32,
                ..b16.vision
            },
            ..b16
        }
    }

    /// OpenAI's ViT-L/14 (224 px).
    pub fn vit_l_14() -> Self {
        let b16 = Self::vit_b_16();
        Self {
            embed_dim: 768,
            vision: VisionConfig {
                width: 1024,
                layers: 24,
                heads: 16,
                patch_size: 14,
                image_size: 224,
                resnet_stages: None,
            },
            text: TextConfig {
                width: 768,
                layers: 12,
                heads: 12,
                ..b16.text
            },
            ..b16
        }
    }

    /// OpenAI's RN50: a ModifiedResNet of stem width 64 with `[3, 4, 6, 3]` bottleneck blocks
    /// (2048 channels, attention pooling with 32 heads) for 224 px images, joined to ViT-B/16's
    /// text encoder in a 1024-dimensional space.
    pub fn rn50() -> Self {
        Self {
            embed_dim: 1024,
            vision: VisionConfig::resnet(64, [3, 4, 6, 3], 224),
            ..Self::vit_b_16()
        }
    }

    /// ViT-B/16's token counts (224 px images in 16 px patches, 77-token context) on narrow,
    /// shallow encoders: the CPU size of `mocoop bench` (minutes on two cores), which the PyTorch
    /// reference builds too.
    pub fn small() -> Self {
        let b16 = Self::vit_b_16();
        Self {
            embed_dim: 128,
            vision: VisionConfig {
                width: 192,
                layers: 4,
                heads: 3,
                ..b16.vision
            },
            text: TextConfig {
                width: 128,
                layers: 4,
                heads: 2,
                ..b16.text
            },
            ..b16
        }
    }

    /// A toy model for tests (seconds in the dev profile): one block per encoder, 32 px images in
    /// 8 px patches, 16-dimensional joint space.
    pub fn tiny() -> Self {
        let b16 = Self::vit_b_16();
        Self {
            embed_dim: 16,
            vision: VisionConfig {
                width: 32,
                layers: 1,
                heads: 2,
                patch_size: 8,
                image_size: 32,
                resnet_stages: None,
            },
            text: TextConfig {
                width: 32,
                layers: 1,
                heads: 2,
                ..b16.text
            },
            ..b16
        }
    }

    /// The model pretrained on the generated shape world (`mocoop pretrain`, the checkpoint that
    /// `mocoop demo` ships): a ViT of width 128 (4 blocks, 32 px images in 8 px patches) and a
    /// text transformer of width 64 (4 blocks) joined in a 64-dimensional space. The token
    /// embedding dominates its size.
    pub fn shapeworld() -> Self {
        let b16 = Self::vit_b_16();
        Self {
            embed_dim: 64,
            vision: VisionConfig {
                width: 128,
                layers: 4,
                heads: 4,
                patch_size: 8,
                image_size: 32,
                resnet_stages: None,
            },
            text: TextConfig {
                width: 64,
                layers: 4,
                heads: 2,
                ..b16.text
            },
            ..b16
        }
    }

    /// The same model for `image_size` px images (the position embedding follows the grid).
    pub fn with_image_size(mut self, image_size: usize) -> Self {
        self.vision.image_size = image_size;
        self
    }

    /// The same model with another MLP activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_without_layer_norm_eps_still_loads() {
        // What native files and runs embed; `layer_norm_eps` came later and defaults to 1e-5.
        let mut json = serde_json::to_value(ClipConfig::shapeworld()).unwrap();
        json.as_object_mut().unwrap().remove("layer_norm_eps");
        let config: ClipConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config, ClipConfig::shapeworld());
    }

    #[test]
    fn activations_parse_in_the_spellings_of_configs_and_the_command_line() {
        for text in ["quick_gelu", "quickgelu", "quick-gelu", "QuickGELU"] {
            assert_eq!(text.parse(), Ok(Activation::QuickGelu), "{text}");
        }
        assert_eq!("GELU".parse(), Ok(Activation::Gelu));
        let err = "gelu_new".parse::<Activation>().unwrap_err();
        assert!(
            err.contains("'gelu_new'") && err.contains("'quick_gelu'"),
            "{err}"
        );
        // serde keeps its own names (config.json and native files).
        assert_eq!(
            serde_json::to_string(&Activation::QuickGelu).unwrap(),
            "\"quick_gelu\""
        );
    }
}
