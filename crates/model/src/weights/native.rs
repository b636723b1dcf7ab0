//! The project's own weight format: a safetensors file in OpenAI key layout whose metadata carries the
//! full [`ClipConfig`] (sizes, heads, activation), so nothing has to be inferred or passed by flag.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{DType, TensorData};

use super::{StateDict, WeightsError};
use crate::config::ClipConfig;

/// Metadata key holding the JSON-serialised [`ClipConfig`].
pub const CONFIG_KEY: &str = "mocoop_config";
/// Metadata key naming where the weights came from (free text, e.g. the input file and its digest).
pub const SOURCE_KEY: &str = "mocoop_source";

/// Precision of the tensors written by [`save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPrecision {
    /// 32-bit floats: exact.
    F32,
    /// 16-bit floats: half the size; values are rounded once.
    F16,
}

/// Writes a canonical state dict and its configuration as a native weight file.
///
/// The file is written to a temporary name beside `path` and renamed, so an interrupted write never
/// leaves a truncated file under the final name.
pub fn save(
    state: &StateDict,
    config: &ClipConfig,
    source: &str,
    precision: StoredPrecision,
    path: &Path,
) -> Result<(), WeightsError> {
    let converted: Vec<(String, TensorData)> = state
        .tensors
        .iter()
        .map(|(name, data)| {
            let dtype = match precision {
                StoredPrecision::F32 => DType::F32,
                StoredPrecision::F16 => DType::F16,
            };
            (name.clone(), data.clone().convert_dtype(dtype))
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = converted
        .iter()
        .map(|(name, data)| {
            let dtype = match data.dtype {
                DType::F16 => safetensors::Dtype::F16,
                _ => safetensors::Dtype::F32,
            };
            let view =
                safetensors::tensor::TensorView::new(dtype, data.shape.to_vec(), data.as_bytes())
                    .map_err(|e| WeightsError::Config(format!("tensor '{name}': {e}")));
            view.map(|v| (name.as_str(), v))
        })
        .collect::<Result<_, _>>()?;
    let config_json = serde_json::to_string(config)
        .map_err(|e| WeightsError::Config(format!("cannot serialise config: {e}")))?;
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), config_json),
        (SOURCE_KEY.to_string(), source.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            message: format!("cannot serialise: {e}"),
        })?;
    crate::atomic::write_atomic(path, &bytes).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}
