//! TorchScript archives (`torch.jit.save`), the format of OpenAI's released CLIP `.pt` files.
//!
//! Such an archive is a zip file laid out as
//!
//! ```text
//! <name>/data.pkl         pickle of the module tree: `__torch__.*` objects whose state dicts hold
//!                         sub-modules, tensors and plain attributes
//! <name>/data/<key>       one raw little-endian storage per key
//! <name>/constants.pkl    tensors baked into the traced graph (not weights; ignored)
//! <name>/code/…           TorchScript source (ignored)
//! <name>/version, <name>/byteorder
//! ```
//!
//! burn-store 0.21's pickle reader handles `torch.save` state dicts only: it requires a dict at the
//! root of the pickle, whereas a TorchScript root is a module object (`NEWOBJ` of a `__torch__.*`
//! class, then `BUILD` with its attribute dict). So these archives are read with this crate's own
//! restricted pickle machine ([`super::pickle`]), and storages are checked against the sizes the
//! archive states.
//!
//! Tensors are named by their attribute path from the root module (`visual.conv1.weight`, …), which
//! for CLIP is the OpenAI layout. Non-weights that OpenAI's archives carry (`input_resolution`,
//! `context_length`, `vocab_size`, `attn_mask`) are dropped. Tensors keep their stored dtype (fp16
//! in OpenAI's files).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use burn::tensor::TensorData;

use super::WeightsError;
use super::archive::PytorchZip;
use super::pickle::{self, Res, TensorRef, Value};

/// Deepest module/dict nesting followed when collecting tensors.
const MAX_DEPTH: usize = 64;
/// Most modules, dicts and tensors visited when collecting tensors: memoised containers can be
/// shared many times over, which would otherwise make the walk exponential.
const MAX_VISITS: usize = 1 << 20;
/// Root-level tensors of OpenAI's archives that describe the geometry rather than hold weights.
const NON_WEIGHTS: &[&str] = &["input_resolution", "context_length", "vocab_size"];

/// Whether `path` is a zip archive with the TorchScript layout (a `data.pkl` beside `constants.pkl`
/// or `code/`). Cheap: reads the zip directory only.
pub(super) fn is_torchscript(path: &Path) -> bool {
    PytorchZip::open(path).is_ok_and(|zip| zip.has("constants.pkl") || zip.has("code/"))
}

/// Reads every tensor of a TorchScript archive, by attribute path.
pub(super) fn read(path: &Path) -> Result<BTreeMap<String, TensorData>, WeightsError> {
    read_archive(path).map_err(|message| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("cannot read as a TorchScript archive: {message}"),
    })
}

fn read_archive(path: &Path) -> Res<BTreeMap<String, TensorData>> {
    let mut archive = PytorchZip::open(path)?;
    let root = pickle::parse(&archive.read_pickle()?)?;

    let mut found = Vec::new();
    let mut visits = 0;
    collect_tensors(&root, &mut Vec::new(), 0, &mut visits, &mut found)?;
    drop(root);
    found.retain(|(name, _)| is_weight(name));
    if found.is_empty() {
        return Err("the pickle holds no tensors".into());
    }

    // Read each storage once, then cut every tensor that views it out of it.
    let mut by_storage: BTreeMap<String, Vec<(String, Rc<TensorRef>)>> = BTreeMap::new();
    for (name, tensor) in found {
        by_storage
            .entry(tensor.storage.key.clone())
            .or_default()
            .push((name, tensor));
    }
    let mut tensors = BTreeMap::new();
    for (key, views) in by_storage {
        let storage = views[0].1.storage.clone();
        if views
            .iter()
            .any(|(_, t)| t.storage.kind != storage.kind || t.storage.numel != storage.numel)
        {
            return Err(format!(
                "storage '{key}' is declared with two different types or sizes"
            ));
        }
        let bytes = archive.read_storage(&storage)?;
        let sole_view = views.len() == 1;
        let mut bytes = Some(bytes);
        for (name, tensor) in views {
            let data = if sole_view && tensor.covers_storage() {
                let bytes = bytes.take().expect("storage bytes are used once");
                TensorData::from_bytes_vec(bytes, tensor.shape.clone(), storage.kind.dtype())
            } else {
                tensor
                    .cut(bytes.as_deref().expect("storage bytes are kept for views"))
                    .map_err(|e| format!("tensor '{name}': {e}"))?
            };
            if tensors.insert(name.clone(), data).is_some() {
                return Err(format!("tensor '{name}' appears twice"));
            }
        }
    }
    Ok(tensors)
}

/// Whether a collected tensor is a weight (not one of the non-weights listed in the module docs).
fn is_weight(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    !NON_WEIGHTS.contains(&name) && last != "attn_mask"
}

/// Walks modules and dicts from the root, collecting tensors under their dotted attribute paths.
fn collect_tensors(
    value: &Value,
    path: &mut Vec<String>,
    depth: usize,
    visits: &mut usize,
    out: &mut Vec<(String, Rc<TensorRef>)>,
) -> Res<()> {
    *visits += 1;
    if *visits > MAX_VISITS {
        return Err(format!(
            "more than {MAX_VISITS} modules, dicts and tensors (shared containers?)"
        ));
    }
    if depth > MAX_DEPTH {
        return Err(format!(
            "modules nested more than {MAX_DEPTH} deep at '{}'",
            path.join(".")
        ));
    }
    match value {
        Value::Tensor(tensor) => {
            if path.is_empty() {
                return Err("the pickle holds a bare tensor, not a module or dict".into());
            }
            out.push((path.join("."), tensor.clone()));
        }
        Value::Object(object) => {
            let state = object.borrow().state.clone();
            collect_tensors(&state, path, depth + 1, visits, out)?;
        }
        Value::Dict(items) => {
            let items = items.borrow().clone();
            for (key, value) in &items {
                let key = match key {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                path.push(key);
                collect_tensors(value, path, depth + 1, visits, out)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}
