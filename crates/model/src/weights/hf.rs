//! transformers `CLIPModel` checkpoints: key renaming into OpenAI layout and `config.json`.
//!
//! transformers splits the packed attention projection into `q_proj`/`k_proj`/`v_proj` and stores the
//! two output projections as `Linear` weights (`[out, in]`); OpenAI's layout packs `in_proj_weight`
//! as `[q; k; v]` and stores `visual.proj`/`text_projection` as `[in, out]` matrices.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::TensorData;

use super::{StateDict, StatedConfig, WeightLayout, WeightsError};
use crate::config::Activation;

/// Whether a tensor map uses transformers' names.
pub(super) fn is_hf_layout(tensors: &BTreeMap<String, TensorData>) -> bool {
    tensors.keys().any(|k| k.starts_with("vision_model."))
}

/// Loads a transformers model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`);
/// the directory is known not to be an open_clip hub folder.
pub(super) fn load_dir(
    dir: &Path,
) -> Result<(StateDict, WeightLayout, StatedConfig), WeightsError> {
    let weights = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| WeightsError::Format {
            path: dir.to_path_buf(),
            message: "directory holds neither a transformers model (config.json with \
                      model.safetensors or pytorch_model.bin) nor an open_clip one \
                      (open_clip_config.json with open_clip_model.safetensors or \
                      open_clip_pytorch_model.bin)"
                .into(),
        })?;
    let (state, layout, stated) = super::load_file(&weights)?;
    if layout != WeightLayout::HuggingFace {
        return Err(WeightsError::Format {
            path: weights,
            message: "expected a transformers CLIPModel checkpoint in a model directory".into(),
        });
    }
    Ok((state, layout, stated))
}

/// Reads heads, activation and LayerNorm epsilon from a transformers `config.json`.
pub(super) fn read_config(path: &Path) -> Result<StatedConfig, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            message: format!("invalid JSON: {e}"),
        })?;
    let section = |name: &str| json.get(name).cloned().unwrap_or_default();
    let (vision, text) = (section("vision_config"), section("text_config"));
    let heads = |v: &serde_json::Value| {
        v.get("num_attention_heads")
            .and_then(serde_json::Value::as_u64)
            .map(|h| h as usize)
    };
    let activation = |v: &serde_json::Value| -> Result<Activation, WeightsError> {
        let name = v
            .get("hidden_act")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("quick_gelu");
        name.parse().map_err(|message| WeightsError::Format {
            path: path.to_path_buf(),
            message,
        })
    };
    let (vision_act, text_act) = (activation(&vision)?, activation(&text)?);
    if vision_act != text_act {
        return Err(WeightsError::Config(format!(
            "{}: image and text encoders use different activations ({vision_act:?} vs {text_act:?}), \
             which this implementation does not support",
            path.display()
        )));
    }
    Ok(StatedConfig {
        vision_heads: heads(&vision),
        text_heads: heads(&text),
        activation: Some(vision_act),
        layer_norm_eps: vision
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64),
        ..StatedConfig::default()
    })
}

/// Renames a block-internal transformers key to its OpenAI equivalent (`None` for q/k/v, which are
/// packed separately).
fn block_key(rest: &str) -> Option<String> {
    const RENAMES: &[(&str, &str)] = &[
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("self_attn.out_proj.", "attn.out_proj."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    ];
    RENAMES
        .iter()
        .find_map(|(from, to)| rest.strip_prefix(from).map(|tail| format!("{to}{tail}")))
}

/// Renames transformers keys into OpenAI layout, packing q/k/v and transposing the projections.
pub(super) fn to_openai_layout(
    mut tensors: BTreeMap<String, TensorData>,
    path: &Path,
) -> Result<StateDict, WeightsError> {
    let format_error = |message: String| WeightsError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut out = BTreeMap::new();
    let plain = [
        (
            "vision_model.embeddings.class_embedding",
            "visual.class_embedding",
        ),
        (
            "vision_model.embeddings.patch_embedding.weight",
            "visual.conv1.weight",
        ),
        (
            "vision_model.embeddings.position_embedding.weight",
            "visual.positional_embedding",
        ),
        ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
        ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
        (
            "vision_model.post_layernorm.weight",
            "visual.ln_post.weight",
        ),
        ("vision_model.post_layernorm.bias", "visual.ln_post.bias"),
        (
            "text_model.embeddings.token_embedding.weight",
            "token_embedding.weight",
        ),
        (
            "text_model.embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("text_model.final_layer_norm.weight", "ln_final.weight"),
        ("text_model.final_layer_norm.bias", "ln_final.bias"),
        ("logit_scale", "logit_scale"),
    ];
    for (from, to) in plain {
        if let Some(t) = tensors.remove(from) {
            out.insert(to.to_string(), t);
        }
    }
    for (from, to) in [
        ("visual_projection.weight", "visual.proj"),
        ("text_projection.weight", "text_projection"),
    ] {
        if let Some(t) = tensors.remove(from) {
            out.insert(to.to_string(), transpose(t).map_err(format_error)?);
        }
    }
    for (hf_prefix, openai_prefix) in [
        (
            "vision_model.encoder.layers.",
            "visual.transformer.resblocks.",
        ),
        ("text_model.encoder.layers.", "transformer.resblocks."),
    ] {
        for layer in 0.. {
            let prefix = format!("{hf_prefix}{layer}.");
            let target = format!("{openai_prefix}{layer}.");
            let keys: Vec<String> = tensors
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            if keys.is_empty() {
                break;
            }
            for suffix in ["weight", "bias"] {
                let parts: Option<Vec<TensorData>> = ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|p| tensors.remove(&format!("{prefix}self_attn.{p}.{suffix}")))
                    .collect();
                let parts = parts.ok_or_else(|| {
                    format_error(format!("layer '{prefix}' lacks one of q/k/v_proj.{suffix}"))
                })?;
                out.insert(
                    format!("{target}attn.in_proj_{suffix}"),
                    concat_rows(parts).map_err(format_error)?,
                );
            }
            for key in keys {
                let Some(tensor) = tensors.remove(&key) else {
                    continue;
                };
                let rest = &key[prefix.len()..];
                let renamed = block_key(rest).ok_or_else(|| {
                    format_error(format!("unexpected transformers tensor '{key}'"))
                })?;
                out.insert(format!("{target}{renamed}"), tensor);
            }
        }
    }
    // Whatever is left keeps its name, so that `StateDict::finish` reports it.
    out.extend(tensors);
    Ok(StateDict::new(out))
}

/// Stacks tensors of one dtype along their first axis.
fn concat_rows(parts: Vec<TensorData>) -> Result<TensorData, String> {
    let first = &parts[0];
    if let Some(part) = parts.iter().find(|p| p.shape.is_empty()) {
        return Err(format!(
            "q/k/v projections must have at least one axis, found shape {:?}",
            part.shape
        ));
    }
    let (dtype, tail) = (first.dtype, first.shape[1..].to_vec());
    let mut rows = 0;
    let mut bytes = Vec::new();
    for part in &parts {
        if part.dtype != dtype || part.shape[1..] != tail[..] {
            return Err(format!(
                "q/k/v projections disagree: {:?} {:?} vs {:?} {:?}",
                part.dtype, part.shape, dtype, first.shape
            ));
        }
        rows += part.shape[0];
        bytes.extend_from_slice(part.as_bytes());
    }
    let mut shape = vec![rows];
    shape.extend(tail);
    Ok(TensorData::from_bytes_vec(bytes, shape, dtype))
}

/// Transposes a 2-D tensor (as f32).
fn transpose(data: TensorData) -> Result<TensorData, String> {
    let [rows, cols] = data.shape[..] else {
        return Err(format!(
            "expected a 2-D projection, found shape {:?}",
            data.shape
        ));
    };
    let values = data
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let mut out = vec![0f32; values.len()];
    if values.is_empty() {
        // Nothing to move; also skips `rows` empty iterations when only `cols` is 0.
        return Ok(TensorData::new(out, [cols, rows]));
    }
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    Ok(TensorData::new(out, [cols, rows]))
}
