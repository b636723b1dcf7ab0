//! The arguments every model-using command shares, and loading CLIP + its tokenizer from them.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use mocoop_model::preprocess::{batch_tensor, load_rgb};
use mocoop_model::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};
use mocoop_model::weights::{LoadOptions, hf_cache};
use mocoop_model::{Clip, Precision};

use crate::device::{DeviceSpec, catch_panic};

/// Texts and images are encoded this many at a time.
pub const BATCH: usize = 64;

/// Which CLIP to load and in which precision: [`ModelArgs`] without the device, for commands that
/// name their devices otherwise (a device list on `train` and `protocol`) or build the checkpoint
/// arguments themselves (`eval` from a run's configuration, `demo` from its shipped model).
#[derive(Debug, Clone, clap::Args)]
pub struct CheckpointArgs {
    /// CLIP checkpoint: OpenAI/open_clip `.safetensors` or `torch.save` `.pt`/`.bin`, an open_clip
    /// hub folder (open_clip_config.json beside the weights), a transformers CLIPModel directory (or
    /// its model.safetensors with config.json beside it), a file made by `cargo xtask convert`, or
    /// hf:ORG/NAME, a model already in the Hugging Face cache (nothing is downloaded).
    #[arg(long, value_name = "PATH")]
    pub weights: PathBuf,
    /// What the checkpoint may not record: activation, open_clip architecture, heads.
    #[command(flatten)]
    pub load: LoadOptions,
    /// Precision of the encoders' compute: f32, or f16/bf16 on GPUs that support them (what
    /// trains keeps f32 master copies; LayerNorms run in f32).
    #[arg(long, default_value = "f32", ignore_case = true)]
    pub precision: Precision,
}

/// Which CLIP to load and where to run it.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceSpec,
}

/// CLIP with the tokenizer that belongs to its checkpoint.
pub struct LoadedClip<B: Backend> {
    /// The model.
    pub clip: Clip<B>,
    /// The embedded OpenAI vocabulary, or the one shipped beside transformers weights.
    pub tokenizer: Cow<'static, ClipTokenizer>,
}

impl CheckpointArgs {
    /// The CLIP a run was trained with, as its configuration records it (`weights` for another
    /// path to it).
    pub fn of_run(config: &mocoop_train::config::TrainConfig, weights: Option<PathBuf>) -> Self {
        Self {
            weights: weights.unwrap_or_else(|| config.weights.clone()),
            load: config.load.clone(),
            precision: config.precision,
        }
    }

    /// Loads the checkpoint onto `device`, which the user named `spec` (for errors).
    pub fn load<B: Backend>(&self, spec: &DeviceSpec, device: &B::Device) -> Result<LoadedClip<B>> {
        check_precision::<B>(self.precision, spec, device)?;
        let loading = || format!("loading weights {}", self.weights.display());
        let weights = hf_cache::resolve(&self.weights).with_context(loading)?;
        let clip = Clip::load(&weights, &self.load, device)
            .with_context(loading)?
            .with_precision(self.precision);
        Ok(LoadedClip {
            clip,
            tokenizer: tokenizer_for(&weights)?,
        })
    }
}

impl ModelArgs {
    /// Loads the checkpoint onto `device`.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<LoadedClip<B>> {
        self.checkpoint.load(&self.device, device)
    }
}

/// Fails with a one-line error when `device` cannot compute in `precision` (e.g. bf16 on most
/// WGPU adapters), instead of a panic in the middle of the first forward pass.
pub fn check_precision<B: Backend>(
    precision: Precision,
    spec: &DeviceSpec,
    device: &B::Device,
) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    catch_panic(|| {
        let x = Tensor::<B, 2>::ones([4, 4], device).cast(precision.dtype());
        let y = burn::tensor::activation::softmax(x.clone().matmul(x), 1);
        y.cast(FloatDType::F32).sum().into_scalar()
    })
    .map_err(|e| {
        anyhow::anyhow!("--precision {precision} is not supported on device '{spec}': {e}")
    })?;
    Ok(())
}

/// A tokenizer shipped next to transformers weights (`vocab.json` + `merges.txt`) is used when
/// present; otherwise the embedded OpenAI vocabulary.
fn tokenizer_for(weights: &Path) -> Result<Cow<'static, ClipTokenizer>> {
    let dir = if weights.is_dir() {
        weights
    } else {
        weights.parent().unwrap_or(Path::new("."))
    };
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab.is_file() && merges.is_file() {
        let tokenizer = ClipTokenizer::from_hf_files(&vocab, &merges)
            .with_context(|| format!("reading the tokenizer beside {}", weights.display()))?;
        Ok(Cow::Owned(tokenizer))
    } else {
        Ok(Cow::Borrowed(ClipTokenizer::embedded()))
    }
}

impl<B: Backend> LoadedClip<B> {
    /// L2-normalised embeddings of `texts`, `[texts.len(), D]`.
    pub fn encode_texts(&self, texts: &[String], device: &B::Device) -> Tensor<B, 2> {
        let context = self.clip.config().text.context_length.min(CONTEXT_LENGTH);
        let chunks: Vec<Tensor<B, 2>> = texts
            .chunks(BATCH)
            .map(|chunk| {
                let tokens: Vec<Vec<u32>> = chunk
                    .iter()
                    .map(|t| self.tokenizer.tokenize(t, context))
                    .collect();
                self.clip.encode_text(&tokens, device)
            })
            .collect();
        Tensor::cat(chunks, 0)
    }

    /// L2-normalised embeddings of already decoded-and-preprocessed images.
    pub fn encode_pixels(&self, pixels: &[Vec<f32>], device: &B::Device) -> Tensor<B, 2> {
        let size = self.clip.config().vision.image_size;
        self.clip
            .encode_image(batch_tensor::<B>(pixels, size, device))
    }

    /// Decodes and preprocesses one image file for this model, with the transform its checkpoint
    /// states.
    pub fn read_image(&self, path: &Path) -> Result<Vec<f32>> {
        let config = self.clip.config();
        Ok(config
            .preprocess
            .apply(&load_rgb(path)?, config.vision.image_size as u32))
    }
}

/// A 2-D tensor as rows of f32.
pub fn to_rows<B: Backend>(tensor: Tensor<B, 2>) -> Result<Vec<Vec<f32>>> {
    let [n, d] = tensor.dims();
    let flat = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading tensor: {e:?}"))?;
    Ok((0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect())
}
