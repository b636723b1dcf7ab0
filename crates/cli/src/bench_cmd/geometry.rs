//! The CLIP sizes the benchmark runs, built with random weights (no checkpoint needed).

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::ValueEnum;
use serde::Serialize;

use mocoop_model::Clip;
use mocoop_model::config::ClipConfig;

/// A model size. The PyTorch reference (`bench/reference/mocoop_step.py`) builds the same sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Geometry {
    /// OpenAI's ViT-B/16: the reference size of the GPU targets.
    #[value(name = "vit-b-16")]
    VitB16,
    /// Fewer and narrower layers, the same token counts (224 px, 16 px patches, 77-token
    /// context): the CPU comparison, minutes on two cores.
    Small,
    /// A toy model for the command's own test (seconds in the dev profile).
    Tiny,
    /// OpenAI's RN50 (a ModifiedResNet image tower, ViT-B/16's text encoder): the cases that do
    /// not tune image LayerNorms, which a ResNet has none of (`encode-image` above all).
    #[value(name = "rn50")]
    Rn50,
}

impl Geometry {
    /// The name used on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::VitB16 => "vit-b-16",
            Self::Small => "small",
            Self::Tiny => "tiny",
            Self::Rn50 => "rn50",
        }
    }

    /// The architecture (the named presets beside [`ClipConfig`]).
    pub fn config(self) -> ClipConfig {
        match self {
            Self::VitB16 => ClipConfig::vit_b_16(),
            Self::Small => ClipConfig::small(),
            Self::Tiny => ClipConfig::tiny(),
            Self::Rn50 => ClipConfig::rn50(),
        }
    }

    /// Whether the image tower has LayerNorms to tune (a ViT; not a ResNet).
    pub fn has_image_layer_norms(self) -> bool {
        self.config().vision.resnet_stages.is_none()
    }

    /// A CLIP of this size with seeded random weights, through the same loading code as a real
    /// checkpoint.
    pub fn random_clip<B: Backend>(self, seed: u64, device: &B::Device) -> Result<Clip<B>> {
        self.config()
            .init(seed, device)
            .context("building the random CLIP")
    }
}
