//! open_clip's standard architectures by name (`--arch ViT-H-14`), for bare weight files that do
//! not carry their configuration.
//!
//! The table (`assets/open_clip_architectures.json`) holds each model's `model_cfg` as open_clip's
//! `model_configs/<name>.json` states it (the facts: sizes, head widths, MLP ratios), so that it is
//! read by the same code as a hub folder's `open_clip_config.json`. open_clip's `-quickgelu`
//! variants differ from their base only in `quick_gelu: true` and are derived, not listed; the
//! others use exact GELU.

use serde_json::{Map, Value};

use super::WeightsError;

/// The table, by name.
const TABLE: &str = include_str!("../../../../assets/open_clip_architectures.json");

/// The suffix of open_clip's QuickGELU variants.
const QUICKGELU: &str = "-quickgelu";

fn table() -> Map<String, Value> {
    serde_json::from_str(TABLE).expect("assets/open_clip_architectures.json is valid JSON")
}

/// Every name `--arch` accepts, the `-quickgelu` variants included.
pub fn names() -> Vec<String> {
    table()
        .keys()
        .flat_map(|name| [name.clone(), format!("{name}{QUICKGELU}")])
        .collect()
}

/// The `model_cfg` of a named architecture (names compare without regard to case).
pub(super) fn model_cfg(name: &str) -> Result<Value, WeightsError> {
    let lower = name.to_ascii_lowercase();
    let (base, quick_gelu) = match lower.strip_suffix(QUICKGELU) {
        Some(base) => (base, true),
        None => (lower.as_str(), false),
    };
    let mut cfg = table()
        .into_iter()
        .find(|(known, _)| known.to_ascii_lowercase() == base)
        .map(|(_, cfg)| cfg)
        .ok_or_else(|| {
            WeightsError::Config(format!(
                "unknown --arch '{name}': known architectures are {} (or pass the model's \
                 open_clip configuration with --open-clip-config FILE)",
                names().join(", ")
            ))
        })?;
    if quick_gelu && let Value::Object(fields) = &mut cfg {
        fields.insert("quick_gelu".into(), Value::Bool(true));
    }
    Ok(cfg)
}
