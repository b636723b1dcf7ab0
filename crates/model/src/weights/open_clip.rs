//! open_clip's own configuration: `open_clip_config.json` of a hub folder, a `model_configs` file
//! given with `--open-clip-config`, or a named architecture (`--arch`, [`architectures`]).
//!
//! open_clip states everything a bare state dict cannot: the heads (as `head_width` of the image
//! tower), the activation (`quick_gelu`, exact GELU when absent), the MLP width and the
//! preprocessing. What the tensors can tell (widths, depths, patch and image size, vocabulary) is
//! checked against them, so that a configuration for another model is an error rather than a
//! model built wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{LoadOptions, StateDict, StatedConfig, WeightLayout, WeightsError, architectures};
use crate::config::{Activation, ClipConfig, RESNET_REDUCTION, TextConfig, VisionConfig};
use crate::preprocess::{Interpolation, Preprocess, ResizeMode};

/// The configuration file of an open_clip hub folder.
pub const CONFIG_FILE: &str = "open_clip_config.json";
/// The weight files of an open_clip hub folder, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];

/// The weights of an open_clip hub folder, if it is one.
pub(super) fn hub_weights(dir: &Path) -> Option<PathBuf> {
    if !dir.join(CONFIG_FILE).is_file() {
        return None;
    }
    WEIGHT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// The open_clip configuration the user named (`--arch` or `--open-clip-config`), if any.
pub(super) fn from_options(options: &LoadOptions) -> Result<Option<StatedConfig>, WeightsError> {
    match (&options.arch, &options.open_clip_config) {
        (Some(_), Some(_)) => Err(WeightsError::Config(
            "give --arch or --open-clip-config, not both".into(),
        )),
        (Some(name), None) => {
            let model_cfg = architectures::model_cfg(name)?;
            stated(&model_cfg, None, &format!("--arch {name}")).map(Some)
        }
        (None, Some(path)) => read_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Reads an `open_clip_config.json` (`{"model_cfg": …, "preprocess_cfg": …}`) or a bare model
/// configuration (open_clip's `model_configs/*.json`).
pub(super) fn read_file(path: &Path) -> Result<StatedConfig, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })?;
    let model_cfg = json.get("model_cfg").unwrap_or(&json);
    stated(
        model_cfg,
        json.get("preprocess_cfg"),
        &path.display().to_string(),
    )
}

/// open_clip's `vision_cfg`, with its defaults.
#[derive(Deserialize)]
#[serde(default)]
struct VisionCfg {
    layers: Value,
    width: usize,
    head_width: usize,
    mlp_ratio: f64,
    patch_size: Option<usize>,
    image_size: Value,
}

impl Default for VisionCfg {
    fn default() -> Self {
        Self {
            layers: json!(12),
            width: 768,
            head_width: 64,
            mlp_ratio: 4.0,
            patch_size: Some(16),
            image_size: json!(224),
        }
    }
}

/// open_clip's `text_cfg`, with its defaults.
#[derive(Deserialize)]
#[serde(default)]
struct TextCfg {
    context_length: usize,
    vocab_size: usize,
    width: usize,
    heads: usize,
    layers: usize,
    mlp_ratio: f64,
}

impl Default for TextCfg {
    fn default() -> Self {
        Self {
            context_length: 77,
            vocab_size: 49408,
            width: 512,
            heads: 8,
            layers: 12,
            mlp_ratio: 4.0,
        }
    }
}

/// Options of open_clip's towers that change the computation, with the values this
/// implementation (OpenAI's CLIP) computes; anything else is refused by name.
const FIXED_OPTIONS: &[(&str, &str, &[&str])] = &[
    ("", "init_logit_bias", &["null"]),
    ("", "multimodal_cfg", &["null"]),
    ("vision_cfg", "timm_model_name", &["null"]),
    ("vision_cfg", "ls_init_value", &["null"]),
    ("vision_cfg", "attentional_pool", &["false"]),
    ("vision_cfg", "no_ln_pre", &["false"]),
    ("vision_cfg", "pos_embed_type", &["\"learnable\""]),
    ("vision_cfg", "final_ln_after_pool", &["false"]),
    ("vision_cfg", "pool_type", &["\"tok\""]),
    ("text_cfg", "hf_model_name", &["null"]),
    ("text_cfg", "hf_tokenizer_name", &["null"]),
    ("text_cfg", "text_arch", &["\"clip\""]),
    ("text_cfg", "ls_init_value", &["null"]),
    ("text_cfg", "embed_cls", &["false"]),
    ("text_cfg", "no_causal_mask", &["false"]),
    ("text_cfg", "final_ln_after_pool", &["false"]),
    ("text_cfg", "pool_type", &["\"argmax\""]),
    ("text_cfg", "proj_bias", &["false"]),
    ("text_cfg", "proj_type", &["\"linear\""]),
];

/// Options of the attention and MLP blocks open_clip may switch on (in either tower).
const BLOCK_OPTIONS: &[(&str, &[&str])] = &[
    ("act_kwargs", &["null"]),
    ("norm_kwargs", &["null"]),
    ("block_type", &["null", "\"default\""]),
    ("qk_norm", &["false"]),
    ("scaled_cosine_attn", &["false"]),
    ("scale_heads", &["false"]),
    ("scale_attn_inner", &["false"]),
    ("scale_attn", &["false"]),
    ("scale_fc", &["false"]),
];

/// Refuses an option this implementation does not compute, naming it.
fn check_supported(model_cfg: &Value, source: &str) -> Result<(), WeightsError> {
    let blocks = ["vision_cfg", "text_cfg"].into_iter().flat_map(|section| {
        BLOCK_OPTIONS
            .iter()
            .map(move |(key, accepted)| (section, *key, *accepted))
    });
    for (section, key, accepted) in FIXED_OPTIONS.iter().copied().chain(blocks) {
        let scope = if section.is_empty() {
            Some(model_cfg)
        } else {
            model_cfg.get(section)
        };
        let Some(value) = scope.and_then(|s| s.get(key)) else {
            continue;
        };
        if !accepted.contains(&value.to_string().as_str()) {
            let dotted = [section, key].join(".");
            return Err(WeightsError::Config(format!(
                "{source}: {} = {value} is not supported (this implementation builds OpenAI's \
                 CLIP ViT)",
                dotted.trim_start_matches('.')
            )));
        }
    }
    Ok(())
}

/// What an open_clip model configuration (and its `preprocess_cfg`) states.
fn stated(
    model_cfg: &Value,
    preprocess_cfg: Option<&Value>,
    source: &str,
) -> Result<StatedConfig, WeightsError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        WeightsError::Config(format!("{source}: invalid {what}: {e}"))
    };
    let section = |name: &str| model_cfg.get(name).cloned().unwrap_or(json!({}));
    let vision: VisionCfg =
        serde_json::from_value(section("vision_cfg")).map_err(|e| invalid("vision_cfg", &e))?;
    check_supported(model_cfg, source)?;
    let text: TextCfg =
        serde_json::from_value(section("text_cfg")).map_err(|e| invalid("text_cfg", &e))?;
    let count = |v: &Value, what: &str| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| invalid(what, &format!("{v} is not one whole number")))
    };
    let embed_dim = model_cfg
        .get("embed_dim")
        .ok_or_else(|| invalid("model configuration", &"no embed_dim"))?;
    // The heads' input: a ViT's width, a ResNet's last stage (`width * 32` channels).
    let attention_width = match vision.layers {
        Value::Array(_) => vision.width.saturating_mul(RESNET_REDUCTION),
        _ => vision.width,
    };
    if vision.head_width == 0 || !attention_width.is_multiple_of(vision.head_width) {
        return Err(invalid(
            "vision_cfg",
            &format!(
                "the attention width {attention_width} is not a multiple of head_width {}",
                vision.head_width
            ),
        ));
    }
    let image_size = count(
        &vision.image_size,
        "vision_cfg.image_size (square images only)",
    )?;
    let tower = match &vision.layers {
        // A list of four stage depths: open_clip's ModifiedResNet, with
        // `width * 32 / head_width` pooling heads.
        Value::Array(stages) => {
            let stages: Vec<usize> = stages
                .iter()
                .map(|n| count(n, "vision_cfg.layers"))
                .collect::<Result<_, _>>()?;
            let stages: [usize; 4] = stages.try_into().map_err(|s: Vec<usize>| {
                invalid("vision_cfg.layers", &format!("{} stages, not 4", s.len()))
            })?;
            let mut resnet = VisionConfig::resnet(vision.width, stages, image_size);
            resnet.heads = attention_width / vision.head_width;
            resnet
        }
        layers => VisionConfig {
            width: vision.width,
            layers: count(layers, "vision_cfg.layers")?,
            heads: vision.width / vision.head_width,
            patch_size: vision
                .patch_size
                .ok_or_else(|| invalid("vision_cfg", &"no patch_size"))?,
            image_size,
            resnet_stages: None,
        },
    };
    let config = ClipConfig {
        embed_dim: count(embed_dim, "embed_dim")?,
        vision: tower,
        text: TextConfig {
            width: text.width,
            layers: text.layers,
            heads: text.heads,
            context_length: text.context_length,
            vocab_size: text.vocab_size,
        },
        activation: if model_cfg.get("quick_gelu") == Some(&Value::Bool(true)) {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        },
        layer_norm_eps: 1e-5,
        preprocess: preprocess_cfg
            .map(|cfg| read_preprocess(cfg, source))
            .transpose()?
            .unwrap_or_default(),
    };
    // open_clip's MLP width, `int(width * mlp_ratio)` (a ResNet has no image MLP).
    let image_mlp = match config.vision.resnet_stages {
        Some(_) => 0,
        None => (vision.width as f64 * vision.mlp_ratio) as usize,
    };
    let mlp = [image_mlp, (text.width as f64 * text.mlp_ratio) as usize];
    Ok(StatedConfig::whole(Geometry {
        source: source.to_string(),
        config,
        mlp,
    }))
}

/// A `preprocess_cfg`: mean and std (three numbers or one), interpolation and resize mode.
fn read_preprocess(cfg: &Value, source: &str) -> Result<Preprocess, WeightsError> {
    let invalid =
        |message: String| WeightsError::Config(format!("{source}: preprocess_cfg {message}"));
    let channels = |key: &str, default: [f32; 3]| -> Result<[f32; 3], WeightsError> {
        let Some(value) = cfg.get(key).filter(|v| !v.is_null()) else {
            return Ok(default);
        };
        let numbers: Vec<f32> = match value {
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect(),
            other => other
                .as_f64()
                .map(|x| vec![x as f32; 3])
                .unwrap_or_default(),
        };
        numbers
            .try_into()
            .map_err(|_| invalid(format!("{key} = {value} is not three numbers")))
    };
    let word = |key: &str| cfg.get(key).and_then(Value::as_str);
    let clip = Preprocess::default();
    Ok(Preprocess {
        mean: channels("mean", clip.mean)?,
        std: channels("std", clip.std)?,
        interpolation: match word("interpolation") {
            // open_clip evaluates "random" with bicubic.
            None | Some("bicubic" | "random") => Interpolation::Bicubic,
            Some("bilinear") => Interpolation::Bilinear,
            Some(other) => {
                return Err(invalid(format!("interpolation '{other}' is not supported")));
            }
        },
        resize_mode: match word("resize_mode") {
            None | Some("shortest") => ResizeMode::Shortest,
            Some("squash") => ResizeMode::Squash,
            Some(other) => {
                return Err(invalid(format!(
                    "resize_mode '{other}' is not supported (shortest and squash are)"
                )));
            }
        },
    })
}

/// An architecture stated whole by a configuration file, checked against the tensors.
#[derive(Debug)]
pub(super) struct Geometry {
    /// Where it was stated, for errors.
    source: String,
    /// Everything it states.
    pub(super) config: ClipConfig,
    /// The MLP widths of the image and text blocks.
    mlp: [usize; 2],
}

impl Geometry {
    /// Errors, listing every difference, when the tensors are not of the stated architecture.
    pub(super) fn check(&self, found: &ClipConfig, state: &StateDict) -> Result<(), WeightsError> {
        let (s, f) = (&self.config, found);
        let mlp = |prefix: &str| {
            state
                .shape(&format!("{prefix}0.mlp.c_fc.weight"))
                .map_or(0, |shape| shape[0])
        };
        let pairs = [
            ("embed_dim", s.embed_dim, f.embed_dim),
            ("vision_cfg.width", s.vision.width, f.vision.width),
            ("vision_cfg.layers", s.vision.layers, f.vision.layers),
            (
                "vision_cfg.patch_size",
                s.vision.patch_size,
                f.vision.patch_size,
            ),
            (
                "vision_cfg.image_size",
                s.vision.image_size,
                f.vision.image_size,
            ),
            (
                "the image MLP width (vision_cfg.mlp_ratio)",
                self.mlp[0],
                mlp("visual.transformer.resblocks."),
            ),
            ("text_cfg.width", s.text.width, f.text.width),
            ("text_cfg.layers", s.text.layers, f.text.layers),
            (
                "text_cfg.context_length",
                s.text.context_length,
                f.text.context_length,
            ),
            ("text_cfg.vocab_size", s.text.vocab_size, f.text.vocab_size),
            (
                "the text MLP width (text_cfg.mlp_ratio)",
                self.mlp[1],
                mlp("transformer.resblocks."),
            ),
        ];
        let stages = |c: &ClipConfig| match c.vision.resnet_stages {
            Some(stages) => format!("the ResNet stages {stages:?}"),
            None => "a ViT".to_string(),
        };
        let towers = [("the image tower", stages(s), stages(f))];
        let differences: Vec<String> = pairs
            .iter()
            .map(|(what, stated, found)| (*what, stated.to_string(), found.to_string()))
            .chain(towers)
            .filter(|(_, stated, found)| stated != found)
            .map(|(what, stated, found)| {
                format!("{what} is {stated} there but {found} in the weights")
            })
            .collect();
        if differences.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Config(format!(
                "{} does not describe these weights: {}",
                self.source,
                differences.join("; ")
            )))
        }
    }
}

/// open_clip's `CustomTextCLIP` keeps the text tower under `text.`; the OpenAI layout has it at the
/// root. Renamed when the root has no text tower of its own.
pub(super) fn lift_custom_text(tensors: &mut BTreeMap<String, TensorData>) {
    if tensors.contains_key("token_embedding.weight")
        || !tensors.contains_key("text.token_embedding.weight")
    {
        return;
    }
    let nested: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with("text."))
        .cloned()
        .collect();
    for key in nested {
        if let Some(data) = tensors.remove(&key) {
            tensors.insert(key["text.".len()..].to_string(), data);
        }
    }
}

/// The layout a hub folder's weights are in, once read (they are open_clip's OpenAI layout).
pub(super) fn check_layout(layout: WeightLayout, weights: &Path) -> Result<(), WeightsError> {
    if layout == WeightLayout::OpenAi {
        Ok(())
    } else {
        Err(WeightsError::Format {
            path: weights.to_path_buf(),
            message: format!(
                "expected an open_clip state dict beside {CONFIG_FILE}, found a {layout:?} checkpoint"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The architecture `--arch name` states, with its MLP widths.
    fn named(name: &str) -> Result<(ClipConfig, [usize; 2]), WeightsError> {
        let stated = from_options(&LoadOptions {
            arch: Some(name.into()),
            ..LoadOptions::default()
        })?
        .expect("an --arch states a configuration");
        let geometry = stated.geometry.expect("a whole architecture");
        Ok((geometry.config, geometry.mlp))
    }

    #[test]
    fn the_named_architectures_state_open_clips_sizes() {
        // (name, image heads, text heads, image MLP width, text MLP width, image size, patch)
        let facts = [
            ("ViT-B-32", 12, 8, 3072, 2048, 224, 32),
            ("ViT-B-16", 12, 8, 3072, 2048, 224, 16),
            ("ViT-L-14", 16, 12, 4096, 3072, 224, 14),
            ("ViT-L-14-336", 16, 12, 4096, 3072, 336, 14),
            ("ViT-H-14", 16, 16, 5120, 4096, 224, 14),
            ("ViT-g-14", 16, 16, 6144, 4096, 224, 14),
            ("ViT-bigG-14", 16, 20, 8192, 5120, 224, 14),
        ];
        for (name, vision_heads, text_heads, vision_mlp, text_mlp, image_size, patch) in facts {
            let (config, mlp) = named(name).unwrap();
            assert_eq!(
                (config.vision.heads, config.text.heads),
                (vision_heads, text_heads),
                "{name}"
            );
            assert_eq!(mlp, [vision_mlp, text_mlp], "{name}");
            assert_eq!(
                (config.vision.image_size, config.vision.patch_size),
                (image_size, patch)
            );
            assert_eq!(config.activation, Activation::Gelu, "{name}");
            assert!(config.preprocess.is_clip(), "{name}");
            let (quick, _) = named(&format!("{name}-quickgelu")).unwrap();
            assert_eq!(quick.activation, Activation::QuickGelu, "{name}-quickgelu");
            assert_eq!(quick.vision, config.vision);
        }
        // Names compare without regard to case.
        let (big_g, _) = named("vit-bigg-14").unwrap();
        assert_eq!(
            (big_g.embed_dim, big_g.text.layers, big_g.vision.layers),
            (1280, 32, 48)
        );
        // (name, stages, stem width, pooling heads, image size, embed_dim): OpenAI's RN sizes.
        let resnets = [
            ("RN50", [3, 4, 6, 3], 64, 32, 224, 1024),
            ("RN101", [3, 4, 23, 3], 64, 32, 224, 512),
            ("RN50x4", [4, 6, 10, 6], 80, 40, 288, 640),
            ("RN50x16", [6, 8, 18, 8], 96, 48, 384, 768),
            ("RN50x64", [3, 15, 36, 10], 128, 64, 448, 1024),
        ];
        for (name, stages, width, heads, image_size, embed_dim) in resnets {
            let (config, mlp) = named(name).unwrap();
            let v = &config.vision;
            assert_eq!(v.resnet_stages, Some(stages), "{name}");
            assert_eq!((v.width, v.heads, v.image_size), (width, heads, image_size));
            assert_eq!((config.embed_dim, mlp[0]), (embed_dim, 0), "{name}");
            assert_eq!(v.grid_size(), image_size / 32, "{name}");
        }
        assert_eq!(architectures::names().len(), 24);
    }

    #[test]
    fn options_this_implementation_does_not_compute_are_refused_by_name() {
        let cfg = json!({
            "embed_dim": 8,
            "vision_cfg": {"width": 64, "layers": 1, "patch_size": 8, "image_size": 16},
            "text_cfg": {"width": 64, "heads": 1, "layers": 1, "qk_norm": true},
        });
        let err = stated(&cfg, None, "test.json").unwrap_err().to_string();
        assert!(
            err.contains("text_cfg.qk_norm = true is not supported"),
            "{err}"
        );
        let siglip = json!({"embed_dim": 8, "init_logit_bias": -10});
        let err = stated(&siglip, None, "test.json").unwrap_err().to_string();
        assert!(err.contains("init_logit_bias = -10"), "{err}");
    }

    #[test]
    fn preprocess_cfg_reads_open_clips_spellings() {
        let cfg = json!({"mean": 0.5, "std": [0.1, 0.2, 0.3], "interpolation": "random"});
        let p = read_preprocess(&cfg, "x").unwrap();
        assert_eq!((p.mean, p.std), ([0.5; 3], [0.1, 0.2, 0.3]));
        assert_eq!(p.interpolation, Interpolation::Bicubic);
        for bad in [json!({"resize_mode": "longest"}), json!({"mean": [1, 2]})] {
            let err = read_preprocess(&bad, "x").unwrap_err().to_string();
            assert!(err.contains("x: preprocess_cfg"), "{err}");
        }
    }
}
