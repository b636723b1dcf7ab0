//! The CLIP model: image encoder, text encoder and the learned temperature.

mod attention;
mod attention_pool;
#[cfg(all(test, feature = "cpu"))]
mod cpu_tests;
pub(crate) mod deep;
mod export;
mod linear;
mod parts;
mod resnet;
mod sequences;
pub mod text;
pub mod transformer;
pub mod vision;
mod vit;

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};

use crate::config::ClipConfig;
use crate::precision::{CastWeights, Precision};
use crate::weights::{self, LoadOptions, LoadedWeights, StateDict, WeightLayout, WeightsError};
pub use deep::DeepPrompts;
pub use parts::{cpu_parts, on_threads, tracks_gradients};
pub use resnet::ModifiedResNet;
pub use sequences::index_tensor;
pub use text::{TextEncoder, eot_positions};
pub use vision::VisionEncoder;
pub use vit::VitEncoder;

impl ClipConfig {
    /// A CLIP of this geometry with freshly initialised weights, on `device`: Burn's
    /// `config.init(&device)`, built through the same loading code as a checkpoint (LayerNorm
    /// scales 1, biases 0, `logit_scale` ln(100), every other weight N(0, 0.02²)). The seed is
    /// explicit, not the backend's RNG, so that the same seed gives the same model on every
    /// backend (tests, benchmarks and pretraining compare across backends).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Clip<B>, WeightsError> {
        let weights = LoadedWeights {
            config: self.clone(),
            state: StateDict::random(seed),
            layout: WeightLayout::Native,
        };
        Clip::from_weights(weights, device)
    }
}

/// CLIP, built from any supported checkpoint, on any Burn backend.
#[derive(Module, Debug)]
pub struct Clip<B: Backend> {
    /// The image encoder (a ViT or a ResNet).
    pub vision: VisionEncoder<B>,
    /// The causal text encoder.
    pub text: TextEncoder<B>,
    logit_scale: Param<Tensor<B, 1>>,
    #[module(skip)]
    config: ClipConfig,
}

impl<B: Backend> Clip<B> {
    /// Reads a checkpoint file or directory and builds the model on `device`.
    pub fn load(
        path: &Path,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        Self::from_weights(weights::load(path, options)?, device)
    }

    /// Builds the model from canonical weights; every tensor must be used exactly once.
    pub fn from_weights(weights: LoadedWeights, device: &B::Device) -> Result<Self, WeightsError> {
        let LoadedWeights {
            config, mut state, ..
        } = weights;
        let vision = VisionEncoder::load(&mut state, &config, device)?;
        let text = TextEncoder::load(&mut state, &config, device)?;
        let logit_scale = take_scalar(&mut state, "logit_scale")?;
        state.finish()?;
        Ok(Self {
            vision,
            text,
            logit_scale: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![logit_scale], [1]),
                device,
            )),
            config,
        })
    }

    /// The same model computing in `precision`: every encoder weight but the LayerNorms' is cast
    /// (see [`crate::precision`]); features keep coming out in f32.
    pub fn with_precision(self, precision: Precision) -> Self {
        let mut cast = CastWeights::new(precision);
        Self {
            vision: self.vision.map(&mut cast),
            text: self.text.map(&mut cast),
            ..self
        }
    }

    /// The precision the encoders compute in.
    pub fn precision(&self) -> Precision {
        match self.text.compute_dtype() {
            FloatDType::F16 => Precision::F16,
            FloatDType::BF16 => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The raw temperature parameter; classifiers multiply cosines by its exponential.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_or(f32::NAN, |v| v[0])
    }

    /// L2-normalised image embeddings of preprocessed images `[batch, 3, size, size]`.
    pub fn encode_image(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        l2_normalize(self.vision.forward(images))
    }

    /// L2-normalised text embeddings of tokenised texts.
    pub fn encode_text(&self, tokens: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2> {
        l2_normalize(self.text.forward_tokens(tokens, device))
    }
}

/// Reads a scalar stored as shape `[]` or `[1]`.
fn take_scalar(state: &mut weights::StateDict, name: &str) -> Result<f32, WeightsError> {
    let shape = state.shape(name).map(<[usize]>::to_vec);
    let expected: &[usize] = match shape.as_deref() {
        Some([1]) => &[1],
        _ => &[],
    };
    let data = state.take(name, expected)?;
    data.convert::<f32>()
        .to_vec::<f32>()
        .map(|v| v[0])
        .map_err(|e| WeightsError::Config(format!("cannot read '{name}': {e:?}")))
}

/// Divides each row by its L2 norm (rows of all zeros stay finite).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
