//! A gate in front of burn-store for `torch.save` archives.
//!
//! burn-store's pickle reader recurses on nested values and trusts declared sizes, so a hostile
//! `.pt` file could overflow the stack or ask for any amount of memory before a single check. Its
//! input is therefore first run through this crate's restricted pickle machine ([`super::pickle`]):
//! only zip archives (`torch.save` since PyTorch 1.6) whose `data.pkl` uses allow-listed globals,
//! nests at most [`MAX_NESTING`] containers deep, has a dict at its root and names storages that
//! exist with exactly the declared sizes are handed on. Anything else is refused.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::WeightsError;
use super::archive::PytorchZip;
use super::pickle::{self, Res, Storage, Value};

/// Deepest container nesting accepted. A state dict nests about five deep (a training checkpoint's
/// optimiser state a few more); this leaves burn-store's recursion far from the stack's end.
const MAX_NESTING: usize = 32;
/// Most values visited in the walk, counting shared containers once per reference: bounds the work
/// burn-store does when it expands them.
const MAX_VISITS: usize = 1 << 22;

/// Checks that `path` is a `torch.save` zip archive that burn-store can be trusted with.
pub(super) fn check(path: &Path) -> Result<(), WeightsError> {
    check_archive(path).map_err(|message| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("refusing to read as a torch.save archive: {message}"),
    })
}

fn check_archive(path: &Path) -> Res<()> {
    let mut archive = PytorchZip::open(path)
        .map_err(|e| format!("{e}; only zip-format checkpoints (PyTorch 1.6 or later) are read"))?;
    let root = pickle::parse(&archive.read_pickle()?)?;
    if !matches!(root, Value::Dict(_)) {
        return Err(format!(
            "the pickle's root is a {}, not a dict",
            root.kind()
        ));
    }
    let storages = walk(&root)?;
    drop(root);
    for storage in storages.values() {
        archive.check_storage(storage)?;
    }
    Ok(())
}

/// Visits every value under `root` without recursing, enforcing the nesting and visit bounds, and
/// returns the storages met, by key (a key declared twice must agree).
fn walk(root: &Value) -> Res<HashMap<String, Rc<Storage>>> {
    let mut storages: HashMap<String, Rc<Storage>> = HashMap::new();
    let mut pending = vec![(root.clone(), 0usize)];
    let mut visits = 0usize;
    while let Some((value, depth)) = pending.pop() {
        visits += 1;
        if visits > MAX_VISITS {
            return Err(format!(
                "more than {MAX_VISITS} values (shared containers?)"
            ));
        }
        if depth > MAX_NESTING {
            return Err(format!("containers nested more than {MAX_NESTING} deep"));
        }
        let storage = match &value {
            Value::Tuple(items) => {
                pending.extend(items.iter().map(|v| (v.clone(), depth + 1)));
                None
            }
            Value::List(items) => {
                pending.extend(items.borrow().iter().map(|v| (v.clone(), depth + 1)));
                None
            }
            Value::Dict(items) => {
                for (key, value) in items.borrow().iter() {
                    pending.push((key.clone(), depth + 1));
                    pending.push((value.clone(), depth + 1));
                }
                None
            }
            Value::Object(object) => {
                pending.push((object.borrow().state.clone(), depth + 1));
                None
            }
            Value::Storage(storage) => Some(storage.clone()),
            Value::Tensor(tensor) => Some(tensor.storage.clone()),
            _ => None,
        };
        if let Some(storage) = storage {
            let known = storages
                .entry(storage.key.clone())
                .or_insert_with(|| storage.clone());
            if known.kind != storage.kind || known.numel != storage.numel {
                return Err(format!(
                    "storage '{}' is declared with two different types or sizes",
                    storage.key
                ));
            }
        }
    }
    Ok(storages)
}
