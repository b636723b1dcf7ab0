//! Reading CLIP checkpoints in the formats people have, into one canonical tensor map.
//!
//! Every supported file is turned into a [`StateDict`] in the OpenAI/open_clip key layout
//! (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`, …), whatever layout it was
//! saved in, together with a [`ClipConfig`] read off the tensor shapes and whatever configuration
//! travels with the file. The model is then built from that one layout only.
//!
//! Supported inputs:
//! - OpenAI/open_clip state dicts as `.safetensors`, or as `torch.save` zip archives (`.pt`, `.pth`,
//!   `.bin`, PyTorch 1.6 or later, optionally nested under a `state_dict` key, `module.` prefixes
//!   stripped; vetted by a restricted pickle reader before burn-store reads them);
//! - TorchScript archives (`torch.jit.save`), such as OpenAI's released `ViT-*.pt` files;
//! - transformers `CLIPModel` checkpoints: a directory with `config.json` and `model.safetensors` (or
//!   `pytorch_model.bin`), or one of those files with its `config.json` beside it;
//! - open_clip hub folders: `open_clip_config.json` with `open_clip_model.safetensors` (or
//!   `open_clip_pytorch_model.bin`), or one of those files with the configuration beside it
//!   ([`open_clip`]); a bare state dict takes its configuration from `--arch NAME` or
//!   `--open-clip-config FILE` instead;
//! - any of these in the Hugging Face cache, as `hf:ORG/NAME` ([`hf_cache`]);
//! - the project's own format: a `.safetensors` file whose metadata carries the [`ClipConfig`]
//!   (see [`native`]).
//!
//! fp16, bf16 and f64 tensors are kept in their stored type here and converted to the backend's float
//! type when the model is built.

mod architectures;
mod archive;
mod hf;
pub mod hf_cache;
pub mod native;
mod open_clip;
mod pickle;
mod torch_save;
mod torchscript;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};

use crate::config::{
    Activation, ClipConfig, RESNET_REDUCTION, TextConfig, VisionConfig, default_heads,
};
use crate::preprocess::Preprocess;

/// Why a checkpoint could not be read or does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not in a format this loader understands, or is corrupt.
    #[error("{path}: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor '{name}' (expected shape {expected:?})")]
    Missing {
        /// Canonical (OpenAI-layout) tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor is present with the wrong shape.
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Canonical (OpenAI-layout) tensor name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors the model has no place for.
    #[error("unexpected tensor(s) in checkpoint: {}", names.join(", "))]
    Unexpected {
        /// Canonical names of the leftover tensors.
        names: Vec<String>,
    },
    /// The configuration cannot be determined or is inconsistent.
    #[error("{0}")]
    Config(String),
    /// An `hf:` model that the Hugging Face cache does not hold (nothing is downloaded).
    #[error(
        "{message} (looked in {path}; nothing is downloaded: fetch the model first, e.g. with \
         `hf download ORG/NAME`, or point HF_HUB_CACHE / HF_HOME at the cache that holds it)"
    )]
    NotInCache {
        /// The directory or file that is not there.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// Where a checkpoint came from, recorded so that conversions and error messages can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// OpenAI / open_clip state dict.
    OpenAi,
    /// transformers `CLIPModel`.
    HuggingFace,
    /// This project's own safetensors file with embedded configuration.
    Native,
}

/// Tensors by canonical OpenAI-layout name, consumed as the model takes them.
#[derive(Debug, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, TensorData>,
    /// When set, missing tensors are drawn at random instead of being an error (see [`Self::random`]).
    random: Option<rand::rngs::StdRng>,
}

/// Whether `name` is a tensor of a ResNet's BatchNorm (`visual.bn1.weight`,
/// `visual.layer1.0.bn3.bias`, `visual.layer1.0.downsample.1.weight`).
fn is_batch_norm(name: &str) -> bool {
    let mut parts = name.rsplit('.').skip(1);
    let module = parts.next().unwrap_or_default();
    module.starts_with("bn") || (module == "1" && parts.next() == Some("downsample"))
}

/// Names that some checkpoints carry but that are configuration, not weights.
const IGNORED_KEYS: &[&str] = &["input_resolution", "context_length", "vocab_size"];

impl StateDict {
    /// Wraps a map of canonical names to tensor data.
    pub fn new(tensors: BTreeMap<String, TensorData>) -> Self {
        Self {
            tensors,
            random: None,
        }
    }

    /// An empty state dict that hands out seeded random tensors of whatever shape the model asks
    /// for: LayerNorm scales 1, biases 0, `logit_scale` ln(100), everything else N(0, 0.02²).
    ///
    /// This builds a model of any geometry (a full ViT-B/16 for shape tests and benchmarks) through
    /// the same loading code as real checkpoints, without shipping weights.
    pub fn random(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            tensors: BTreeMap::new(),
            random: Some(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    fn draw(rng: &mut rand::rngs::StdRng, name: &str, shape: &[usize]) -> TensorData {
        use rand_distr::Distribution;
        let count = shape.iter().product::<usize>();
        let is_norm = (name.contains("ln_") || is_batch_norm(name)) && name.ends_with(".weight");
        let values: Vec<f32> = if name.ends_with("bias") || name.ends_with("running_mean") {
            vec![0.0; count]
        } else if is_norm || name.ends_with("running_var") {
            vec![1.0; count]
        } else if name == "logit_scale" {
            vec![100f32.ln(); count]
        } else {
            let normal = rand_distr::Normal::new(0.0f32, 0.02).expect("valid std");
            (0..count).map(|_| normal.sample(rng)).collect()
        };
        TensorData::new(values, shape.to_vec())
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Names of all tensors still held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors still held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor is left.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Read-only access to one tensor.
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors.get(name)
    }

    /// Removes and returns a tensor after checking its shape.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<TensorData, WeightsError> {
        if let Some(rng) = self.random.as_mut()
            && !self.tensors.contains_key(name)
        {
            return Ok(Self::draw(rng, name, expected));
        }
        let data = self
            .tensors
            .remove(name)
            .ok_or_else(|| WeightsError::Missing {
                name: name.to_string(),
                expected: expected.to_vec(),
            })?;
        if data.shape.as_slice() != expected {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        Ok(data)
    }

    /// Errors if any weight was not consumed, so that a checkpoint for another architecture is not
    /// silently half-loaded.
    pub fn finish(self) -> Result<(), WeightsError> {
        let names: Vec<String> = self
            .tensors
            .into_keys()
            .filter(|name| {
                !IGNORED_KEYS.contains(&name.as_str())
                    && !name.ends_with("position_ids")
                    // BatchNorm's count of training batches (PyTorch's `BatchNorm2d` buffer).
                    && !name.ends_with("num_batches_tracked")
            })
            .collect();
        if names.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Unexpected { names })
        }
    }

    /// Number of residual blocks under `prefix` (e.g. `visual.transformer.resblocks.`).
    fn count_blocks(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.tensors
                    .contains_key(&format!("{prefix}{i}.attn.in_proj_weight"))
            })
            .count()
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, WeightsError> {
        let shape = self.shape(name).ok_or_else(|| {
            WeightsError::Config(format!(
                "cannot determine the architecture: tensor '{name}' is missing"
            ))
        })?;
        shape.get(axis).copied().ok_or_else(|| {
            WeightsError::Config(format!(
                "tensor '{name}' has shape {shape:?}, which has no axis {axis}"
            ))
        })
    }
}

/// Settings that a checkpoint may not carry, supplied by the user: command-line flags, defined
/// once here (the CLI's `CheckpointArgs` and `cargo xtask convert` flatten them).
///
/// A run records them (`config.json`), so that it is reloaded as it was trained.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// MLP activation, for state dicts that do not record it (OpenAI layout defaults to
    /// quick_gelu; open_clip models without "quickgelu" in their name need `gelu`). Overrides
    /// what the checkpoint states.
    #[arg(long, ignore_case = true)]
    pub activation: Option<Activation>,
    /// open_clip architecture of a bare state dict (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336,
    /// ViT-H-14, ViT-g-14, ViT-bigG-14, each also as NAME-quickgelu): heads, activation and MLP
    /// width, checked against the tensors.
    #[arg(long, value_name = "NAME", conflicts_with = "open_clip_config")]
    pub arch: Option<String>,
    /// open_clip configuration of a bare state dict: an `open_clip_config.json` or one of
    /// open_clip's `model_configs/*.json`.
    #[arg(long, value_name = "FILE")]
    pub open_clip_config: Option<PathBuf>,
    /// Attention heads of the image encoder, for checkpoints that do not state them (otherwise
    /// width / 64, OpenAI's rule). Overrides what the checkpoint states.
    #[arg(long, value_name = "N")]
    pub vision_heads: Option<usize>,
    /// Attention heads of the text encoder, for checkpoints that do not state them (otherwise
    /// width / 64). Overrides what the checkpoint states.
    #[arg(long, value_name = "N")]
    pub text_heads: Option<usize>,
}

impl LoadOptions {
    /// These options, each one not given taken from `recorded` (a run's).
    pub fn or(self, recorded: &LoadOptions) -> Self {
        let arch_given = self.arch.is_some() || self.open_clip_config.is_some();
        Self {
            activation: self.activation.or(recorded.activation),
            arch: if arch_given {
                self.arch
            } else {
                recorded.arch.clone()
            },
            open_clip_config: if arch_given {
                self.open_clip_config
            } else {
                recorded.open_clip_config.clone()
            },
            vision_heads: self.vision_heads.or(recorded.vision_heads),
            text_heads: self.text_heads.or(recorded.text_heads),
        }
    }
}

/// A checkpoint read into canonical form, ready to build a model from.
#[derive(Debug)]
pub struct LoadedWeights {
    /// The architecture.
    pub config: ClipConfig,
    /// The tensors, in OpenAI layout.
    pub state: StateDict,
    /// The layout the file was saved in.
    pub layout: WeightLayout,
}

/// Heads and activation that a file's own configuration states (transformers `config.json`, or the
/// native metadata), or the user; anything absent falls back to OpenAI's rules.
#[derive(Debug, Default)]
struct StatedConfig {
    vision_heads: Option<usize>,
    text_heads: Option<usize>,
    activation: Option<Activation>,
    layer_norm_eps: Option<f64>,
    preprocess: Option<Preprocess>,
    /// A whole architecture (open_clip's configuration), checked against the tensors.
    geometry: Option<open_clip::Geometry>,
}

impl StatedConfig {
    /// Everything a whole configuration states.
    fn whole(geometry: open_clip::Geometry) -> Self {
        let config = &geometry.config;
        Self {
            vision_heads: Some(config.vision.heads),
            text_heads: Some(config.text.heads),
            activation: Some(config.activation),
            layer_norm_eps: Some(config.layer_norm_eps),
            preprocess: Some(config.preprocess),
            geometry: Some(geometry),
        }
    }

    /// The user's flags take the place of what the file states.
    fn overridden_by(mut self, options: &LoadOptions) -> Self {
        self.vision_heads = options.vision_heads.or(self.vision_heads);
        self.text_heads = options.text_heads.or(self.text_heads);
        self.activation = options.activation.or(self.activation);
        self
    }
}

/// Reads a checkpoint file or directory in any supported format (or an `hf:` model in the
/// Hugging Face cache, [`hf_cache`]).
pub fn load(path: &Path, options: &LoadOptions) -> Result<LoadedWeights, WeightsError> {
    let named = open_clip::from_options(options)?;
    let path = hf_cache::resolve(path)?;
    let metadata = std::fs::metadata(&path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (state, layout, stated) = if metadata.is_dir() {
        load_dir(&path)?
    } else {
        load_file(&path)?
    };
    let stated = named.unwrap_or(stated).overridden_by(options);
    let config = infer_config(&state, &stated)?;
    Ok(LoadedWeights {
        config,
        state,
        layout,
    })
}

/// Reads a model directory: an open_clip hub folder, or a transformers one.
fn load_dir(dir: &Path) -> Result<(StateDict, WeightLayout, StatedConfig), WeightsError> {
    match open_clip::hub_weights(dir) {
        Some(weights) => {
            let loaded = load_file(&weights)?;
            open_clip::check_layout(loaded.1, &weights)?;
            Ok(loaded)
        }
        None => hf::load_dir(dir),
    }
}

/// Reads one weight file and turns it into canonical layout.
fn load_file(path: &Path) -> Result<(StateDict, WeightLayout, StatedConfig), WeightsError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let (tensors, native_config) = match extension.as_str() {
        "safetensors" => read_safetensors(path)?,
        "pt" | "pth" | "bin" | "ckpt" => (read_pickle(path)?, None),
        _ => {
            return Err(WeightsError::Format {
                path: path.to_path_buf(),
                message: "unknown weight file extension: expected .safetensors, .pt, .pth or .bin \
                          (or a transformers or open_clip model directory, or hf:ORG/NAME)"
                    .into(),
            });
        }
    };
    if let Some(config) = native_config {
        let stated = StatedConfig {
            vision_heads: Some(config.vision.heads),
            text_heads: Some(config.text.heads),
            activation: Some(config.activation),
            layer_norm_eps: Some(config.layer_norm_eps),
            preprocess: Some(config.preprocess),
            geometry: None,
        };
        return Ok((StateDict::new(tensors), WeightLayout::Native, stated));
    }
    if hf::is_hf_layout(&tensors) {
        let dir = path.parent().unwrap_or(Path::new("."));
        let stated = hf::read_config(&dir.join("config.json"))?;
        let state = hf::to_openai_layout(tensors, path)?;
        return Ok((state, WeightLayout::HuggingFace, stated));
    }
    openai_layout(path, tensors)
}

/// An OpenAI/open_clip state dict (a ViT or a ResNet CLIP: both have a `visual.conv1`), with the
/// configuration of the open_clip hub folder it is in, if it is in one; no CLIP at all is refused.
fn openai_layout(
    path: &Path,
    mut tensors: BTreeMap<String, TensorData>,
) -> Result<(StateDict, WeightLayout, StatedConfig), WeightsError> {
    open_clip::lift_custom_text(&mut tensors);
    if !tensors.contains_key("visual.conv1.weight") {
        return Err(WeightsError::Format {
            path: path.to_path_buf(),
            message: format!(
                "not a CLIP checkpoint: no 'visual.conv1.weight' (OpenAI layout) or \
                 'vision_model.*' (transformers layout) tensor among {} tensors{}",
                tensors.len(),
                tensors
                    .keys()
                    .next()
                    .map(|k| format!(", first is '{k}'"))
                    .unwrap_or_default()
            ),
        });
    }
    let beside = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(open_clip::CONFIG_FILE);
    let stated = if beside.is_file() {
        open_clip::read_file(&beside)?
    } else {
        StatedConfig::default()
    };
    Ok((StateDict::new(tensors), WeightLayout::OpenAi, stated))
}

/// Reads a safetensors file; returns the embedded native configuration when there is one.
fn read_safetensors(
    path: &Path,
) -> Result<(BTreeMap<String, TensorData>, Option<ClipConfig>), WeightsError> {
    let io_error = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    // SAFETY: the map is read-only and dropped before this function returns; a file truncated by
    // another process meanwhile could fault, as with any memory-mapped reader.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error)?;
    let format_error = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_error(format!("invalid safetensors header: {e}")))?;
    let native_config = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(native::CONFIG_KEY))
        .map(|json| {
            serde_json::from_str::<ClipConfig>(json)
                .map_err(|e| format_error(format!("invalid embedded mocoop config: {e}")))
        })
        .transpose()?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format_error(format!("invalid safetensors file: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            other => {
                return Err(format_error(format!(
                    "tensor '{name}' has unsupported dtype {other:?}"
                )));
            }
        };
        let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
        tensors.insert(name, data);
    }
    Ok((tensors, native_config))
}

/// Reads a `torch.save` pickle (plain or nested under `state_dict`), dropping `module.` prefixes.
fn read_pickle(path: &Path) -> Result<BTreeMap<String, TensorData>, WeightsError> {
    use burn_store::pytorch::PytorchReader;
    let format_error = |e: &dyn std::fmt::Display| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("cannot read as a torch.save state dict or TorchScript archive ({e})"),
    };
    // burn-store reads `torch.save` pickles only (a dict at the root); TorchScript archives (OpenAI's
    // released files) pickle a module object instead. They are recognised by their zip directory, and
    // go to our own reader without burn-store parsing them first.
    if torchscript::is_torchscript(path) {
        return torchscript::read(path);
    }
    // burn-store's own pickle reader is not hardened against hostile files; ours vets them first.
    torch_save::check(path)?;
    let reader = PytorchReader::new(path).map_err(|e| format_error(&e))?;
    let reader = if reader.keys().iter().any(|k| k.starts_with("state_dict.")) {
        PytorchReader::with_top_level_key(path, "state_dict").map_err(|e| format_error(&e))?
    } else {
        reader
    };
    let mut tensors = BTreeMap::new();
    for (name, snapshot) in reader.into_tensors() {
        let data = snapshot.to_data().map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            message: format!("cannot read tensor '{name}': {e:?}"),
        })?;
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        tensors.insert(name, data);
    }
    Ok(tensors)
}

/// Reads the architecture off canonical tensor shapes, as OpenAI's `build_model` does.
fn infer_config(state: &StateDict, stated: &StatedConfig) -> Result<ClipConfig, WeightsError> {
    let (mut vision, attention_width) = if state.shape(RESNET_POOL).is_some() {
        infer_resnet(state)?
    } else {
        infer_vit(state)?
    };
    let text_width = state.dim("ln_final.weight", 0)?;
    let text_layers = state.count_blocks("transformer.resblocks.");
    if text_layers == 0 {
        return Err(WeightsError::Config(
            "found no text residual blocks ('transformer.resblocks.0.*')".into(),
        ));
    }
    let [vision_heads, text_heads] = heads(stated, [attention_width, text_width])?;
    vision.heads = vision_heads;
    let config = ClipConfig {
        embed_dim: state.dim("text_projection", 1)?,
        vision,
        text: TextConfig {
            width: text_width,
            layers: text_layers,
            heads: text_heads,
            context_length: state.dim("positional_embedding", 0)?,
            vocab_size: state.dim("token_embedding.weight", 0)?,
        },
        activation: stated.activation.unwrap_or_default(),
        layer_norm_eps: stated.layer_norm_eps.unwrap_or(1e-5),
        preprocess: stated.preprocess.unwrap_or_default(),
    };
    if let Some(geometry) = &stated.geometry {
        geometry.check(&config, state)?;
    }
    for (what, width, heads) in [
        ("image", attention_width, config.vision.heads),
        ("text", config.text.width, config.text.heads),
    ] {
        if heads == 0 || width % heads != 0 {
            return Err(WeightsError::Config(format!(
                "{what} encoder width {width} is not divisible by {heads} heads"
            )));
        }
    }
    Ok(config)
}

/// The tensor only a ResNet CLIP has: its attention pooling's positions.
const RESNET_POOL: &str = "visual.attnpool.positional_embedding";

/// The side of the square grid of a positional embedding of `positions` rows (a leading token and
/// the grid's cells).
fn square_grid(name: &str, positions: usize) -> Result<usize, WeightsError> {
    positions
        .checked_sub(1)
        .map(usize::isqrt)
        .filter(|&g| g > 0 && g * g + 1 == positions)
        .ok_or_else(|| {
            WeightsError::Config(format!(
                "{name} has {positions} rows, which is not 1 + a square grid"
            ))
        })
}

/// A ViT's sizes (heads still to be found) and its attention width.
fn infer_vit(state: &StateDict) -> Result<(VisionConfig, usize), WeightsError> {
    let width = state.dim("visual.conv1.weight", 0)?;
    let patch_size = state.dim("visual.conv1.weight", 2)?;
    let name = "visual.positional_embedding";
    let grid = square_grid(name, state.dim(name, 0)?)?;
    let layers = state.count_blocks("visual.transformer.resblocks.");
    if layers == 0 {
        return Err(WeightsError::Config(
            "found no image residual blocks ('visual.transformer.resblocks.0.*')".into(),
        ));
    }
    let image_size = grid.checked_mul(patch_size).ok_or_else(|| {
        WeightsError::Config(format!(
            "a {grid}x{grid} grid of {patch_size}-pixel patches is too large"
        ))
    })?;
    let vision = VisionConfig {
        width,
        layers,
        heads: 0,
        patch_size,
        image_size,
        resnet_stages: None,
    };
    Ok((vision, width))
}

/// A ModifiedResNet's sizes, as OpenAI's `build_model` reads them: the blocks of each stage
/// (`visual.layer{1..4}.{j}`), the stem width (`visual.layer1.0.conv1.weight`'s rows) and the
/// image size (32 × the side of the attention pooling's grid); its attention width is the last
/// stage's channels, `width * 32`.
fn infer_resnet(state: &StateDict) -> Result<(VisionConfig, usize), WeightsError> {
    let mut stages = [0; 4];
    for (i, blocks) in stages.iter_mut().enumerate() {
        *blocks = (0..)
            .take_while(|j| {
                state
                    .shape(&format!("visual.layer{}.{j}.conv1.weight", i + 1))
                    .is_some()
            })
            .count();
    }
    if stages.contains(&0) {
        return Err(WeightsError::Config(format!(
            "a ResNet CLIP needs bottleneck blocks in all four stages ('visual.layer1.0.*' to \
             'visual.layer4.0.*'); found {stages:?}"
        )));
    }
    let width = state.dim("visual.layer1.0.conv1.weight", 0)?;
    let grid = square_grid(RESNET_POOL, state.dim(RESNET_POOL, 0)?)?;
    let image_size = grid.checked_mul(RESNET_REDUCTION).ok_or_else(|| {
        WeightsError::Config(format!("a {grid}x{grid} ResNet feature map is too large"))
    })?;
    let attention_width = width
        .checked_mul(RESNET_REDUCTION)
        .ok_or_else(|| WeightsError::Config(format!("a ResNet stem {width} wide is too wide")))?;
    let vision = VisionConfig {
        heads: 0,
        ..VisionConfig::resnet(width, stages, image_size)
    };
    Ok((vision, attention_width))
}

/// The image and text heads: as stated, or by OpenAI's rule of 64-wide heads, which is said once
/// on stderr because a wrong guess loads without error and computes other features.
fn heads(stated: &StatedConfig, widths: [usize; 2]) -> Result<[usize; 2], WeightsError> {
    let encoders = [
        ("image", "--vision-heads", stated.vision_heads),
        ("text", "--text-heads", stated.text_heads),
    ];
    let mut heads = [0; 2];
    let mut guessed = Vec::new();
    for (((what, flag, stated), width), out) in encoders.into_iter().zip(widths).zip(&mut heads) {
        *out = match stated {
            Some(heads) => heads,
            None => {
                let heads = default_heads(width).ok_or_else(|| {
                    WeightsError::Config(format!(
                        "the checkpoint does not state the {what} encoder's attention heads, and \
                         its width {width} is not a multiple of 64 (OpenAI's rule of 64-wide \
                         heads): pass --vision-heads N --text-heads N, or the model's \
                         configuration (--arch NAME or --open-clip-config FILE)"
                    ))
                })?;
                guessed.push(format!("{heads} {what} heads ({flag})"));
                heads
            }
        };
    }
    if !guessed.is_empty() {
        eprintln!(
            "note: the checkpoint does not state its attention heads; assuming 64-wide heads \
             (OpenAI's rule): {}. If the model was trained otherwise, say so with those flags.",
            guessed.join(", ")
        );
    }
    Ok(heads)
}
