//! Checkpoints hold only what trains: the prompt contexts, the text bias, the router and (with LN
//! tuning) the image encoder's `ln_1`/`ln_2` — kilobytes, never the CLIP weights.
//!
//! Format: a safetensors file of f32 tensors (`ctx.<g>`, `text_bias`, `router.weight` `[E, D]`,
//! `router.bias`, `visual.transformer.resblocks.<i>.ln_<1|2>.<weight|bias>`) and, in the epoch
//! checkpoints a run can be resumed from, byte tensors (`u8`) holding state such as the
//! optimiser's. The metadata has `format = mocoop-checkpoint`, the method, the epoch, the mixture
//! configuration (JSON) and `digest`: the SHA-256 of everything else in the file, so that a
//! truncated or corrupted checkpoint is detected when it is read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::Dtype;
use safetensors::tensor::TensorInfo;
use sha2::{Digest, Sha256};

use mocoop_model::Clip;

use crate::TrainError;
use crate::model::visual_ln_params;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "mocoop-checkpoint";
/// The metadata key of the content digest.
pub const DIGEST_KEY: &str = "digest";

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// The f32 tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// The byte tensors (saved state that is not a model tensor) by name.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// The metadata (`format`, `method`, `epoch`, `mixture`, `digest`, …).
    pub metadata: HashMap<String, String>,
}

/// One tensor of the file: name, dtype, shape, little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// SHA-256 over the metadata (sorted, without the digest itself) and every tensor's name, dtype,
/// shape and bytes (sorted by name), as hex.
fn content_digest<'a>(
    entries: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut hasher = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    let sorted: BTreeMap<&String, &String> =
        metadata.iter().filter(|(k, _)| *k != DIGEST_KEY).collect();
    for (key, value) in sorted {
        feed(key.as_bytes());
        feed(value.as_bytes());
    }
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, bytes) in entries {
        feed(name.as_bytes());
        feed(format!("{dtype:?}{shape:?}").as_bytes());
        feed(bytes);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes f32 `tensors`, byte `blobs` and `metadata` to `path` with a content digest,
/// atomically (a temporary file, then a rename).
pub fn write(
    path: &Path,
    tensors: &[(String, TensorData)],
    blobs: &[(String, Vec<u8>)],
    metadata: HashMap<String, String>,
) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::io(path, e);
    let mut entries: Vec<Entry> = tensors
        .iter()
        .map(|(name, data)| {
            let values = data.clone().convert::<f32>().to_vec::<f32>().map_err(|e| {
                TrainError::Checkpoint(format!("cannot read tensor '{name}': {e:?}"))
            })?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.clone(), Dtype::F32, data.shape.to_vec(), bytes))
        })
        .collect::<Result<_, TrainError>>()?;
    for (name, bytes) in blobs {
        entries.push((name.clone(), Dtype::U8, vec![bytes.len()], bytes.clone()));
    }
    let mut metadata = metadata;
    metadata.insert("format".into(), FORMAT.into());
    let digest = content_digest(
        entries
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())),
        &metadata,
    );
    metadata.insert(DIGEST_KEY.into(), digest);
    let bytes = serialize(entries, &metadata)
        .map_err(|e| TrainError::Checkpoint(format!("serialising {}: {e}", path.display())))?;
    mocoop_model::atomic::write_atomic(path, &bytes).map_err(io)
}

/// The safetensors header: the metadata first, then the tensors in the order of their data.
struct Header<'a> {
    metadata: BTreeMap<&'a str, &'a str>,
    tensors: Vec<(&'a str, TensorInfo)>,
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + self.tensors.len()))?;
        map.serialize_entry("__metadata__", &self.metadata)?;
        for (name, info) in &self.tensors {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

/// The safetensors file of `entries` and `metadata`, laid out as `safetensors::serialize` lays it
/// out (tensors by descending dtype alignment, then name; the header's JSON padded with spaces to
/// 8 bytes) but with the metadata keys sorted: `serialize` writes them in the order of its
/// `HashMap`, which differs from run to run, so that identical checkpoints got different bytes.
fn serialize(
    mut entries: Vec<Entry>,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut offset = 0;
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, dtype, shape, bytes) in &entries {
        let bits = shape.iter().product::<usize>() * dtype.bitsize();
        if bytes.len() * 8 != bits {
            return Err(format!(
                "tensor '{name}' has {} bytes, its shape {shape:?} needs {bits} bits",
                bytes.len()
            ));
        }
        let info = TensorInfo {
            dtype: *dtype,
            shape: shape.clone(),
            data_offsets: (offset, offset + bytes.len()),
        };
        offset += bytes.len();
        tensors.push((name.as_str(), info));
    }
    let header = Header {
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        tensors,
    };
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, bytes) in &entries {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Reads a checkpoint written by [`write()`], checking its format and content digest.
pub fn read(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |message: String| TrainError::Checkpoint(format!("{}: {message}", path.display()));
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        bad(format!(
            "not a safetensors file, or truncated ({e}); the file is damaged"
        ))
    })?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            "not a mocoop checkpoint (no 'format: mocoop-checkpoint' metadata)".into(),
        ));
    }
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("{e}; the file is damaged")))?;
    let views = file.tensors();
    let expected = metadata
        .get(DIGEST_KEY)
        .ok_or_else(|| bad("no content digest; not written by this version of mocoop".into()))?;
    let actual = content_digest(
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
        &metadata,
    );
    if &actual != expected {
        return Err(bad(
            "content digest mismatch: the file is corrupt (changed after it was written)".into(),
        ));
    }
    let mut tensors = BTreeMap::new();
    let mut blobs = BTreeMap::new();
    for (name, view) in views {
        match view.dtype() {
            Dtype::F32 => {
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
            }
            Dtype::U8 => {
                blobs.insert(name, view.data().to_vec());
            }
            other => {
                return Err(bad(format!(
                    "tensor '{name}' is {other:?}, expected F32 (or U8 state)"
                )));
            }
        }
    }
    Ok(Checkpoint {
        tensors,
        blobs,
        metadata,
    })
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
    let Some(transformer) = clip.vision.transformer_mut() else {
        return Ok(clip); // a ResNet: no LayerNorms, and `names` is empty
    };
    let blocks = std::mem::take(&mut transformer.blocks);
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
    transformer.blocks = rebuilt;
    Ok(clip)
}
