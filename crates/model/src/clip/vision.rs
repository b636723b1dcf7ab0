//! CLIP's image encoder: a ViT ([`VitEncoder`]) or OpenAI's ModifiedResNet ([`ModifiedResNet`]),
//! as the checkpoint has it, behind one `forward`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::resnet::ModifiedResNet;
use super::transformer::Transformer;
use super::vit::VitEncoder;
use crate::config::ClipConfig;
use crate::weights::{StateDict, WeightsError};

/// The image tower of a CLIP model.
// One per model, built once and moved whole: the size of the larger variant costs nothing, and
// Burn's `Module` derive has no boxed variants.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionEncoder<B: Backend> {
    /// A vision transformer (OpenAI's ViT-B/32, ViT-B/16, ViT-L/14, open_clip's ViTs).
    Vit(VitEncoder<B>),
    /// OpenAI's ModifiedResNet (RN50, RN101, RN50x4, RN50x16, RN50x64).
    ResNet(ModifiedResNet<B>),
}

impl<B: Backend> VisionEncoder<B> {
    /// Takes the `visual.*` tensors of an OpenAI-layout state dict, of the tower `config` names.
    pub(crate) fn load(
        state: &mut StateDict,
        config: &ClipConfig,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Ok(match config.vision.resnet_stages {
            Some(_) => Self::ResNet(ModifiedResNet::load(state, config, device)?),
            None => Self::Vit(VitEncoder::load(state, config, device)?),
        })
    }

    /// Side of the square images this encoder takes.
    pub fn image_size(&self) -> usize {
        match self {
            Self::Vit(vit) => vit.image_size(),
            Self::ResNet(resnet) => resnet.image_size(),
        }
    }

    /// Image features (not normalised, f32) of preprocessed images `[batch, 3, size, size]`,
    /// computed in the type of the encoder's weights.
    ///
    /// # Panics
    /// If the images are not `image_size` square: preprocessing guarantees it.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_prompted(images, &[])
    }

    /// [`Self::forward`] with deep visual prompts (`[n, width]` each): the first appended to the
    /// ViT's sequences, each later one in their place before the next block
    /// ([`VitEncoder`]'s `forward`).
    ///
    /// # Panics
    /// As [`Self::forward`]; and with prompts on a ResNet, which has no token sequence, or
    /// prompts for more layers than the ViT has: the methods check both when they are built
    /// ([`Self::prompt_layers`]).
    pub fn forward_prompted(&self, images: Tensor<B, 4>, prompts: &[Tensor<B, 2>]) -> Tensor<B, 2> {
        let [_, channels, height, width] = images.dims();
        let size = self.image_size();
        assert!(
            channels == 3 && height == size && width == size,
            "images must be [N, 3, {size}, {size}], got {:?}",
            images.dims(),
        );
        match self {
            Self::Vit(vit) => vit.forward(images, prompts),
            Self::ResNet(resnet) => {
                assert!(prompts.is_empty(), "a ResNet image tower takes no prompts");
                resnet.forward(images)
            }
        }
    }

    /// The width and number of layers of the ViT's residual stream (what deep visual prompts must
    /// fit), or `None` for a ResNet, which takes none.
    pub fn prompt_layers(&self) -> Option<(usize, usize)> {
        match self {
            Self::Vit(vit) => Some((vit.width(), vit.layers())),
            Self::ResNet(_) => None,
        }
    }

    /// The ViT's residual blocks, whose LayerNorms visual LN tuning trains; `None` for a ResNet,
    /// which has no LayerNorms.
    pub fn transformer(&self) -> Option<&Transformer<B>> {
        match self {
            Self::Vit(vit) => Some(&vit.transformer),
            Self::ResNet(_) => None,
        }
    }

    /// [`Self::transformer`], to change.
    pub fn transformer_mut(&mut self) -> Option<&mut Transformer<B>> {
        match self {
            Self::Vit(vit) => Some(&mut vit.transformer),
            Self::ResNet(_) => None,
        }
    }
}
