//! Checkpoints hold only what trains: the prompt contexts, the text bias, the router and (with LN
//! tuning) the image encoder's `ln_1`/`ln_2` — kilobytes, never the CLIP weights.
//!
//! Format: a safetensors file of f32 tensors (`ctx.<g>`, `text_bias`, `router.weight` `[E, D]`,
//! `router.bias`, `visual.transformer.resblocks.<i>.ln_<1|2>.<weight|bias>`) whose metadata has
//! `format = mocoop-checkpoint`, the method, the epoch and the mixture configuration (JSON).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use mocoop_model::Clip;
use mocoop_model::prompt::MixtureOfPrompts;

use crate::TrainError;
use crate::model::visual_ln_params;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "mocoop-checkpoint";

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// The tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// The metadata (`format`, `method`, `epoch`, `mixture`).
    pub metadata: HashMap<String, String>,
}

/// The trainable tensors of a model, by checkpoint name.
pub fn trainable_tensors<B: Backend>(
    clip: &Clip<B>,
    mixture: &MixtureOfPrompts<B>,
    ln_tuning: bool,
) -> Vec<(String, TensorData)> {
    let mut out = mixture.tensors();
    if ln_tuning {
        for (name, param) in visual_ln_params(clip) {
            out.push((name, param.val().into_data()));
        }
    }
    out
}

/// Writes tensors and metadata to `path` (atomically: a temporary file, then a rename).
pub fn write(
    path: &Path,
    tensors: &[(String, TensorData)],
    metadata: HashMap<String, String>,
) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::io(path, e);
    let owned: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, data)| {
            let values = data.clone().convert::<f32>().to_vec::<f32>().map_err(|e| {
                TrainError::Checkpoint(format!("cannot read tensor '{name}': {e:?}"))
            })?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.clone(), bytes, data.shape.to_vec()))
        })
        .collect::<Result<_, TrainError>>()?;
    let views = owned
        .iter()
        .map(|(name, bytes, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| TrainError::Checkpoint(format!("tensor '{name}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata = metadata;
    metadata.insert("format".into(), FORMAT.into());
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TrainError::Checkpoint(format!("serialising {}: {e}", path.display())))?;
    mocoop_model::atomic::write_atomic(path, &bytes).map_err(io)
}

/// Reads a checkpoint written by [`write`].
pub fn read(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |message: String| TrainError::Checkpoint(format!("{}: {message}", path.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            "not a mocoop checkpoint (no 'format: mocoop-checkpoint' metadata)".into(),
        ));
    }
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "tensor '{name}' is {:?}, expected F32",
                view.dtype()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
    }
    Ok(Checkpoint { tensors, metadata })
}

/// Puts saved image LayerNorm values into `clip` (consuming them from `saved`).
pub fn load_visual_ln<B: Backend>(
    clip: Clip<B>,
    saved: &mut BTreeMap<String, TensorData>,
    device: &B::Device,
) -> Result<Clip<B>, TrainError> {
    let mut clip = clip;
    let names: Vec<String> = visual_ln_params(&clip)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut values = Vec::with_capacity(names.len());
    for name in &names {
        let data = saved.remove(name).ok_or_else(|| {
            TrainError::Checkpoint(format!(
                "the run tunes the image LayerNorms but the checkpoint has no '{name}'"
            ))
        })?;
        values.push(data);
    }
    let mut values = values.into_iter();
    let mut next =
        |param: Param<Tensor<B, 1>>, name: &str| -> Result<Param<Tensor<B, 1>>, TrainError> {
            let data = values.next().expect("one value per name");
            let width = param.dims()[0];
            if data.shape.as_slice() != [width] {
                return Err(TrainError::Checkpoint(format!(
                    "checkpoint tensor '{name}' has shape {:?}, the model needs [{width}] (a \
                 checkpoint of another CLIP?)",
                    data.shape
                )));
            }
            let (id, old, mapper) = param.consume();
            let mut value = Tensor::from_data(data, device);
            if old.is_require_grad() {
                value = value.require_grad();
            }
            Ok(Param::from_mapped_value(id, value, mapper))
        };
    let mut names = names.iter();
    let blocks = std::mem::take(&mut clip.vision.transformer.blocks);
    let mut rebuilt = Vec::with_capacity(blocks.len());
    for mut block in blocks {
        for ln in [&mut block.ln_1, &mut block.ln_2] {
            let gamma = std::mem::replace(
                &mut ln.gamma,
                Param::from_tensor(Tensor::zeros([1], device)),
            );
            ln.gamma = next(gamma, names.next().expect("name"))?;
            if let Some(beta) = ln.beta.take() {
                ln.beta = Some(next(beta, names.next().expect("name"))?);
            }
        }
        rebuilt.push(block);
    }
    clip.vision.transformer.blocks = rebuilt;
    Ok(clip)
}
