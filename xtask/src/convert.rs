//! `cargo xtask convert IN OUT`: any checkpoint `mocoop` reads → the native format.
//!
//! Inputs are whatever [`mocoop_model::weights::load`] accepts: OpenAI TorchScript archives, `torch.save`
//! state dicts, open_clip safetensors and hub folders, transformers `CLIPModel` directories or files,
//! native files, and `hf:ORG/NAME` models of the Hugging Face cache.
//! The output is a safetensors file in OpenAI layout holding exactly the model's tensors (in f32 or
//! f16), with the [`ClipConfig`] and a JSON note of the input (file names and SHA-256 digests, layout)
//! in its metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mocoop_model::ClipConfig;
use mocoop_model::weights::hf_cache;
use mocoop_model::weights::native::{self, StoredPrecision};
use mocoop_model::weights::{
    self, LoadOptions, LoadedWeights, StateDict, WeightLayout, WeightsError,
};

use crate::layout::openai_tensors_with_mlp;

/// Choices for a conversion.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Precision of the stored tensors.
    pub precision: StoredPrecision,
    /// What the input does not record (activation, open_clip architecture, heads).
    pub load: LoadOptions,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            precision: StoredPrecision::F32,
            load: LoadOptions::default(),
        }
    }
}

/// What a conversion read and wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The layout the input was saved in.
    pub layout: WeightLayout,
    /// The input's file format, in words (e.g. "TorchScript archive").
    pub format: &'static str,
    /// The architecture read off the input.
    pub config: ClipConfig,
    /// Number of tensors written.
    pub tensors: usize,
    /// SHA-256 of each input file (one for a file, each file of a directory).
    pub input_digests: Vec<(String, String)>,
    /// The provenance note stored in the output's metadata.
    pub source: String,
    /// Size of the output file.
    pub output_bytes: u64,
}

/// Reads `input` (any supported format) and writes it to `output` in the native format.
pub fn convert(input: &Path, output: &Path, options: &ConvertOptions) -> Result<Converted> {
    if output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "the output file name must end in .safetensors (the native format is a safetensors \
             file): {}",
            output.display()
        );
    }
    let input = &hf_cache::resolve(input)?;
    let input_digests = input_digests(input)?;
    let LoadedWeights {
        config,
        mut state,
        layout,
    } = weights::load(input, &options.load).map_err(|e| match e {
        // These name the file already.
        WeightsError::Io { .. } | WeightsError::Format { .. } => anyhow::Error::new(e),
        other => anyhow::anyhow!("{}: {other}", input.display()),
    })?;

    // Keep exactly the model's tensors; anything missing, misshapen or unexpected is an error now
    // rather than when the converted file is loaded.
    let mlp = ["visual.transformer.resblocks.0", "transformer.resblocks.0"].map(|block| {
        state
            .shape(&format!("{block}.mlp.c_fc.weight"))
            .map_or(0, |s| s[0])
    });
    let mut tensors = BTreeMap::new();
    for (name, shape) in openai_tensors_with_mlp(&config, mlp) {
        let shape = match (name.as_str(), state.shape(&name)) {
            // Stored as a 0-d tensor or as [1], depending on who saved it.
            ("logit_scale", Some([1])) => vec![1],
            _ => shape,
        };
        let data = state
            .take(&name, &shape)
            .with_context(|| format!("{} does not fit the model", input.display()))?;
        tensors.insert(name, data);
    }
    state
        .finish()
        .with_context(|| format!("{} does not fit the model", input.display()))?;
    let count = tensors.len();

    let source = source_note(input, layout, &input_digests);
    native::save(
        &StateDict::new(tensors),
        &config,
        &source,
        options.precision,
        output,
    )
    .with_context(|| format!("writing {}", output.display()))?;
    let output_bytes = std::fs::metadata(output)
        .with_context(|| format!("reading back {}", output.display()))?
        .len();
    Ok(Converted {
        layout,
        format: input_format(input, layout),
        config,
        tensors: count,
        input_digests,
        source,
        output_bytes,
    })
}

/// SHA-256 of the input: the file itself, or every regular file of a (transformers or open_clip)
/// directory.
fn input_digests(input: &Path) -> Result<Vec<(String, String)>> {
    let files: Vec<PathBuf> = if input.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("reading {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![input.to_path_buf()]
    };
    files
        .iter()
        .map(|file| {
            let digest =
                crate::sha256_file(file).with_context(|| format!("reading {}", file.display()))?;
            Ok((file_name(file), digest))
        })
        .collect()
}

/// The input's file format, in words.
fn input_format(input: &Path, layout: WeightLayout) -> &'static str {
    let extension = input
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match (layout, extension.as_deref()) {
        (WeightLayout::Native, _) => "native safetensors",
        (WeightLayout::HuggingFace, _) if input.is_dir() => "transformers directory",
        (WeightLayout::OpenAi, _) if input.is_dir() => "open_clip hub folder",
        (_, Some("safetensors")) => "safetensors",
        _ if is_torchscript(input) => "TorchScript archive",
        _ => "torch.save pickle",
    }
}

/// Whether a file is a zip archive with TorchScript's `constants.pkl`.
fn is_torchscript(path: &Path) -> bool {
    std::fs::File::open(path)
        .ok()
        .and_then(|f| zip::ZipArchive::new(std::io::BufReader::new(f)).ok())
        .is_some_and(|archive| archive.file_names().any(|n| n.ends_with("constants.pkl")))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The JSON provenance note: `{"converted_by", "input", "layout", "sha256": {file: digest}}`.
fn source_note(input: &Path, layout: WeightLayout, digests: &[(String, String)]) -> String {
    let sha256: serde_json::Map<String, serde_json::Value> = digests
        .iter()
        .map(|(f, d)| (f.clone(), serde_json::Value::String(d.clone())))
        .collect();
    serde_json::json!({
        "converted_by": concat!("cargo xtask convert (mocoop ", env!("CARGO_PKG_VERSION"), ")"),
        "input": file_name(input),
        "format": input_format(input, layout),
        "layout": format!("{layout:?}"),
        "sha256": sha256,
    })
    .to_string()
}

/// One line describing an architecture: widths, depths, heads, patch and image size, activation.
pub fn describe(config: &ClipConfig) -> String {
    let v = &config.vision;
    let t = &config.text;
    let image = match v.resnet_stages {
        Some(stages) => format!(
            "RN stages {stages:?} {}px (stem width {}, {} pooling heads)",
            v.image_size, v.width, v.heads
        ),
        None => format!(
            "ViT-{}/{} {}px (width {}, {} layers, {} heads)",
            model_size_name(v.width),
            v.patch_size,
            v.image_size,
            v.width,
            v.layers,
            v.heads
        ),
    };
    format!(
        "{image}; text width {}, {} layers, {} heads, context {}, vocab {}; embed {}; {:?}",
        t.width,
        t.layers,
        t.heads,
        t.context_length,
        t.vocab_size,
        config.embed_dim,
        config.activation,
    )
}

fn model_size_name(width: usize) -> String {
    match width {
        768 => "B".into(),
        1024 => "L".into(),
        1280 => "H".into(),
        w => format!("w{w}"),
    }
}
