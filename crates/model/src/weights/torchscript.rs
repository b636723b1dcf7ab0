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
//! class, then `BUILD` with its attribute dict). So this module carries its own minimal pickle
//! machine. It executes nothing: the only globals it knows are those tensor rebuilding needs
//! (`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, `torch.*Storage`,
//! `collections.OrderedDict`, the `torch.jit._pickle` container helpers) and `__torch__.*` classes,
//! which only ever become inert attribute bags. Any other global is an error. Every length is checked
//! against the input before anything is allocated, and storages against the sizes the archive states.
//!
//! Tensors are named by their attribute path from the root module (`visual.conv1.weight`, …), which
//! for CLIP is the OpenAI layout. Non-weights that OpenAI's archives carry (`input_resolution`,
//! `context_length`, `vocab_size`, `attn_mask`) are dropped. Tensors keep their stored dtype (fp16
//! in OpenAI's files).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use burn::tensor::{DType, TensorData};

use super::WeightsError;

/// Largest `data.pkl` accepted (OpenAI's are well under 1 MiB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deepest module/dict nesting followed when collecting tensors.
const MAX_DEPTH: usize = 64;
/// Most dimensions a tensor may have.
const MAX_DIMS: usize = 16;
/// Root-level tensors of OpenAI's archives that describe the geometry rather than hold weights.
const NON_WEIGHTS: &[&str] = &["input_resolution", "context_length", "vocab_size"];

type Res<T> = Result<T, String>;

/// Whether `path` is a zip archive with the TorchScript layout (a `data.pkl` beside `constants.pkl`
/// or `code/`). Cheap: reads the zip directory only.
pub(super) fn is_torchscript(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(archive) = zip::ZipArchive::new(BufReader::new(file)) else {
        return false;
    };
    let Ok(prefix) = archive_prefix(&archive) else {
        return false;
    };
    archive.file_names().any(|name| {
        name.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest == "constants.pkl" || rest.starts_with("code/"))
    })
}

/// Reads every tensor of a TorchScript archive, by attribute path.
pub(super) fn read(path: &Path) -> Result<BTreeMap<String, TensorData>, WeightsError> {
    read_archive(path).map_err(|message| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("cannot read as a TorchScript archive: {message}"),
    })
}

fn read_archive(path: &Path) -> Res<BTreeMap<String, TensorData>> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let archive_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a valid zip archive ({e})"))?;
    let prefix = archive_prefix(&archive)?;

    if let Some(order) = read_small_entry(&mut archive, &format!("{prefix}byteorder"))? {
        let order = String::from_utf8_lossy(&order);
        if order.trim() != "little" {
            return Err(format!(
                "byte order '{}' is not supported (only little-endian)",
                order.trim()
            ));
        }
    }

    let pickle = {
        let name = format!("{prefix}data.pkl");
        let mut entry = archive
            .by_name(&name)
            .map_err(|e| format!("cannot open {name}: {e}"))?;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(format!(
                "{name} claims {} bytes, more than the {MAX_PICKLE_BYTES} accepted",
                entry.size()
            ));
        }
        let mut bytes = Vec::new();
        entry
            .by_ref()
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        bytes
    };
    let root = Machine::new(&pickle).run()?;

    let mut found = Vec::new();
    collect_tensors(&root, &mut Vec::new(), 0, &mut found)?;
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
        let bytes = read_storage(&mut archive, &prefix, &storage, archive_len)?;
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

/// The directory holding `data.pkl`: `""` or a single `<name>/`.
fn archive_prefix<R: std::io::Read + std::io::Seek>(archive: &zip::ZipArchive<R>) -> Res<String> {
    let mut prefixes = archive.file_names().filter_map(|name| {
        let prefix = name.strip_suffix("data.pkl")?;
        (prefix.is_empty() || (prefix.ends_with('/') && prefix.matches('/').count() == 1))
            .then(|| prefix.to_string())
    });
    let first = prefixes
        .next()
        .ok_or("the zip archive has no data.pkl (not a PyTorch archive)")?;
    if prefixes.next().is_some() {
        return Err("the zip archive has more than one data.pkl".into());
    }
    Ok(first)
}

/// Reads a small optional entry (at most 1 KiB).
fn read_small_entry<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
) -> Res<Option<Vec<u8>>> {
    let Ok(entry) = archive.by_name(name) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    entry
        .take(1024)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    Ok(Some(bytes))
}

/// Reads the raw bytes of one storage, checking its size against what the pickle declares.
fn read_storage<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    prefix: &str,
    storage: &Storage,
    archive_len: u64,
) -> Res<Vec<u8>> {
    let name = format!("{prefix}data/{}", storage.key);
    let expected = storage.byte_len();
    let mut entry = archive
        .by_name(&name)
        .map_err(|e| format!("storage {name} is missing ({e})"))?;
    if entry.size() != expected as u64 {
        return Err(format!(
            "storage {name} holds {} bytes, but the pickle declares {} elements of {} bytes",
            entry.size(),
            storage.numel,
            storage.kind.element_size()
        ));
    }
    // Stored (uncompressed) entries cannot be larger than the file; only pre-allocate what the file
    // can actually hold, and let compressed data grow the buffer as it really decompresses.
    let capacity = if entry.compression() == zip::CompressionMethod::Stored
        && entry.compressed_size() <= archive_len
    {
        expected
    } else {
        expected.min(1 << 24)
    };
    let mut bytes = Vec::with_capacity(capacity);
    entry
        .by_ref()
        .take(expected as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read storage {name}: {e}"))?;
    if bytes.len() != expected {
        return Err(format!(
            "storage {name} is truncated: {} of {expected} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Walks modules and dicts from the root, collecting tensors under their dotted attribute paths.
fn collect_tensors(
    value: &Value,
    path: &mut Vec<String>,
    depth: usize,
    out: &mut Vec<(String, Rc<TensorRef>)>,
) -> Res<()> {
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
            collect_tensors(&state, path, depth + 1, out)?;
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
                collect_tensors(value, path, depth + 1, out)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Values

/// The element type of a storage, from its `torch.*Storage` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    F64,
    F32,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::Bf16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn element_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::Bf16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    fn dtype(self) -> DType {
        match self {
            Self::F64 => DType::F64,
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
            Self::I64 => DType::I64,
            Self::I32 => DType::I32,
            Self::I16 => DType::I16,
            Self::I8 => DType::I8,
            // Booleans are one byte, 0 or 1; no CLIP weight is boolean, so they are kept as bytes.
            Self::U8 | Self::Bool => DType::U8,
        }
    }
}

/// A storage named by a persistent id: `('storage', torch.HalfStorage, '<key>', 'cpu', numel)`.
#[derive(Debug)]
struct Storage {
    kind: StorageKind,
    key: String,
    numel: usize,
}

impl Storage {
    fn byte_len(&self) -> usize {
        // Checked when the storage is created.
        self.numel * self.kind.element_size()
    }
}

/// A strided view of a storage, from `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<Storage>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    fn new(
        storage: Rc<Storage>,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    ) -> Res<Self> {
        if shape.len() != stride.len() || shape.len() > MAX_DIMS {
            return Err(format!(
                "tensor with size {shape:?} and stride {stride:?} is malformed"
            ));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("tensor size {shape:?} overflows"))?;
        if numel > 0 {
            // Index of the last element viewed; must lie inside the storage.
            let last = shape
                .iter()
                .zip(&stride)
                .try_fold(offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                })
                .ok_or_else(|| format!("tensor view {shape:?}/{stride:?} overflows"))?;
            if last >= storage.numel {
                return Err(format!(
                    "tensor of size {shape:?}, stride {stride:?} at offset {offset} reaches past \
                     storage '{}' of {} elements",
                    storage.key, storage.numel
                ));
            }
        }
        Ok(Self {
            storage,
            offset,
            shape,
            stride,
        })
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the view is row-major contiguous (dimensions of size 1 may have any stride).
    fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Whether the view is exactly the whole storage, in order.
    fn covers_storage(&self) -> bool {
        self.offset == 0 && self.numel() == self.storage.numel && self.is_contiguous()
    }

    /// Copies the viewed elements out of the storage bytes, in row-major order.
    fn cut(&self, bytes: &[u8]) -> Res<TensorData> {
        let size = self.storage.kind.element_size();
        let numel = self.numel();
        let dtype = self.storage.kind.dtype();
        if bytes.len() != self.storage.byte_len() {
            return Err("storage size changed".into());
        }
        if numel == 0 {
            return Ok(TensorData::from_bytes_vec(
                Vec::new(),
                self.shape.clone(),
                dtype,
            ));
        }
        let out = if self.is_contiguous() {
            bytes[self.offset * size..(self.offset + numel) * size].to_vec()
        } else {
            // Odometer over the multi-index; bounds were checked in `new`.
            let mut out = Vec::with_capacity(numel * size);
            let mut index = vec![0usize; self.shape.len()];
            let mut source = self.offset;
            for _ in 0..numel {
                out.extend_from_slice(&bytes[source * size..(source + 1) * size]);
                // Wrapping: past the last element the odometer may step outside the storage.
                for axis in (0..index.len()).rev() {
                    index[axis] += 1;
                    source = source.wrapping_add(self.stride[axis]);
                    if index[axis] < self.shape[axis] {
                        break;
                    }
                    source = source.wrapping_sub(self.stride[axis].wrapping_mul(self.shape[axis]));
                    index[axis] = 0;
                }
            }
            out
        };
        Ok(TensorData::from_bytes_vec(out, self.shape.clone(), dtype))
    }
}

/// The Python globals the reader understands; anything else is refused when named.
#[derive(Debug, Clone)]
enum Global {
    RebuildTensor,
    RebuildParameter,
    OrderedDict,
    Storage(StorageKind),
    /// `torch.jit._pickle.restore_type_tag(value, type)`: returns `value`.
    RestoreTypeTag,
    /// `torch.jit._pickle.build_{int,double,bool,tensor,str}list(list)`: returns `list`.
    BuildList,
    /// A TorchScript class (`__torch__.…`): instances are attribute bags, never executed.
    Class(Rc<str>),
}

fn resolve_global(module: &str, name: &str) -> Res<Global> {
    Ok(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch.jit._pickle", "restore_type_tag") => Global::RestoreTypeTag,
        (
            "torch.jit._pickle",
            "build_intlist" | "build_doublelist" | "build_boollist" | "build_tensorlist"
            | "build_strlist",
        ) => Global::BuildList,
        ("torch", storage) if StorageKind::from_class(storage).is_some() => {
            Global::Storage(StorageKind::from_class(storage).expect("checked"))
        }
        (module, name) if module == "__torch__" || module.starts_with("__torch__.") => {
            Global::Class(format!("{module}.{name}").into())
        }
        (module, name) => {
            return Err(format!(
                "the pickle refers to the Python global '{module}.{name}', which a weight file has \
                 no reason to use; refusing to read it"
            ));
        }
    })
}

/// An instance of a TorchScript class: its class name and the state `BUILD` gave it.
struct Object {
    class: Rc<str>,
    state: Value,
}

/// A pickled value. Containers are shared (`Rc`) because the memo aliases them, and mutable because
/// pickles fill containers after memoising them.
#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float attribute; its value is never needed.
    Float,
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Object(Rc<RefCell<Object>>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global(g) => format!("global {g:?}"),
            Value::Object(o) => format!("{} object", o.borrow().class),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }

    fn as_int(&self, what: &str) -> Res<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(format!("{what}: expected an int, found {}", other.kind())),
        }
    }

    fn as_usize(&self, what: &str) -> Res<usize> {
        let i = self.as_int(what)?;
        usize::try_from(i).map_err(|_| format!("{what}: {i} is not a valid size"))
    }

    fn as_str(&self, what: &str) -> Res<Rc<str>> {
        match self {
            Value::Str(s) => Ok(s.clone()),
            other => Err(format!("{what}: expected a str, found {}", other.kind())),
        }
    }

    /// The items of a tuple or list.
    fn items(&self, what: &str) -> Res<Vec<Value>> {
        match self {
            Value::Tuple(items) => Ok(items.as_ref().clone()),
            Value::List(items) => Ok(items.borrow().clone()),
            other => Err(format!("{what}: expected a tuple, found {}", other.kind())),
        }
    }

    fn sizes(&self, what: &str) -> Res<Vec<usize>> {
        let items = self.items(what)?;
        if items.len() > MAX_DIMS {
            return Err(format!("{what}: {} dimensions", items.len()));
        }
        items.iter().map(|v| v.as_usize(what)).collect()
    }

    /// Moves the children out of a container that this value alone owns, so that deeply nested
    /// values are dropped iteratively instead of overflowing the call stack.
    fn detach_children(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Tuple(items) => {
                if let Some(items) = Rc::get_mut(items) {
                    out.append(items);
                }
            }
            Value::List(items) if Rc::strong_count(items) == 1 => {
                out.append(&mut items.borrow_mut());
            }
            Value::Dict(items) if Rc::strong_count(items) == 1 => {
                for (k, v) in items.borrow_mut().drain(..) {
                    out.push(k);
                    out.push(v);
                }
            }
            Value::Object(object) if Rc::strong_count(object) == 1 => {
                out.push(std::mem::replace(
                    &mut object.borrow_mut().state,
                    Value::None,
                ));
            }
            _ => {}
        }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        self.detach_children(&mut pending);
        while let Some(mut value) = pending.pop() {
            value.detach_children(&mut pending);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The pickle machine

/// A pickle interpreter for the opcodes that `torch.save` and `torch.jit.save` emit (protocols 2–5,
/// binary opcodes only).
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn bytes(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or_else(|| {
                format!(
                    "data.pkl is truncated: {n} bytes needed at offset {} of {}",
                    self.pos,
                    self.input.len()
                )
            })?;
        let out = &self.input[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("length checked"))
    }

    fn len_u32(&mut self) -> Res<usize> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn len_u64(&mut self) -> Res<usize> {
        usize::try_from(u64::from_le_bytes(self.array()?)).map_err(|_| "length overflows".into())
    }

    fn line(&mut self) -> Res<&'a str> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("data.pkl is truncated inside a GLOBAL")?;
        let line = self.bytes(end + 1)?;
        std::str::from_utf8(&line[..end]).map_err(|_| "GLOBAL name is not UTF-8".into())
    }

    fn string(&mut self, n: usize) -> Res<Value> {
        let bytes = self.bytes(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| "string is not UTF-8".to_string())?;
        Ok(Value::Str(s.into()))
    }

    fn push(&mut self, value: Value) {
        self.stack.push(value);
    }

    fn pop(&mut self) -> Res<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pickle stack underflow (popped past a MARK)".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    fn top(&self) -> Res<&Value> {
        self.stack
            .last()
            .ok_or_else(|| "pickle stack is empty".into())
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let mark = self.marks.pop().ok_or("pickle MARK missing")?;
        if mark > self.stack.len() {
            return Err("pickle MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u32) -> Res<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Res<()> {
        let value = self
            .memo
            .get(&index)
            .ok_or_else(|| format!("pickle memo entry {index} is missing"))?
            .clone();
        self.push(value);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Res<()> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of values".into());
        }
        let Value::Dict(dict) = self.top()? else {
            return Err(format!("SETITEM on a {}", self.top()?.kind()));
        };
        let mut dict = dict.borrow_mut();
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            dict.push((key, value));
        }
        Ok(())
    }

    fn run(mut self) -> Res<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let version = self.u8()?;
                    if !(2..=5).contains(&version) {
                        return Err(format!("pickle protocol {version} is not supported"));
                    }
                }
                0x95 => {
                    self.bytes(8)?; // FRAME: a hint only
                }
                b'.' => {
                    let value = self.pop()?;
                    return Ok(value);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return Err(format!("{n}-byte integer is too large"));
                    }
                    let bytes = self.bytes(n)?;
                    let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    self.bytes(8)?;
                    self.push(Value::Float);
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let s = self.string(n)?;
                    self.push(s);
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(s);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.string(n)?;
                    self.push(s);
                }
                b')' => self.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop()?]
                    } else {
                        self.pop_mark()?
                    };
                    let Value::List(list) = self.top()? else {
                        return Err(format!("APPEND to a {}", self.top()?.kind()));
                    };
                    list.borrow_mut().extend(items);
                }
                b'}' => self.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Rc::default()));
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(resolve_global(module, name)?));
                }
                0x93 => {
                    let name = self.pop()?.as_str("STACK_GLOBAL name")?;
                    let module = self.pop()?.as_str("STACK_GLOBAL module")?;
                    self.push(Value::Global(resolve_global(&module, &name)?));
                }
                b'q' => {
                    let index = self.u8()?;
                    self.memo_put(index.into())?;
                }
                b'r' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_put(index)?;
                }
                0x94 => {
                    let index = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    self.memo_put(index)?;
                }
                b'h' => {
                    let index = self.u8()?;
                    self.memo_get(index.into())?;
                }
                b'j' => {
                    let index = u32::from_le_bytes(self.array()?);
                    self.memo_get(index)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(&pid)?;
                    self.push(Value::Storage(Rc::new(storage)));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = reduce(&callable, &args)?;
                    self.push(value);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let value = match &class {
                        Value::Global(Global::Class(name)) => {
                            Value::Object(Rc::new(RefCell::new(Object {
                                class: name.clone(),
                                state: Value::None,
                            })))
                        }
                        Value::Global(Global::OrderedDict) => Value::Dict(Rc::default()),
                        other => return Err(format!("NEWOBJ of a {}", other.kind())),
                    };
                    self.push(value);
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Object(object) => object.borrow_mut().state = state,
                        // `torch.save`'d state dicts carry a `_metadata` attribute: not needed.
                        Value::Dict(_) => {}
                        other => return Err(format!("BUILD of a {}", other.kind())),
                    }
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at byte {at} of data.pkl"
                    ));
                }
            }
        }
    }
}

/// Parses a persistent id `('storage', torch.XStorage, key, location, numel)`.
fn persistent_storage(pid: &Value) -> Res<Storage> {
    let items = pid.items("persistent id")?;
    let [tag, class, key, _location, numel] = items.as_slice() else {
        return Err(format!(
            "persistent id with {} fields is not a storage",
            items.len()
        ));
    };
    if tag.as_str("persistent id")?.as_ref() != "storage" {
        return Err("persistent id is not a storage".into());
    }
    let Value::Global(Global::Storage(kind)) = class else {
        return Err(format!("storage of type {}", class.kind()));
    };
    let key = key.as_str("storage key")?.to_string();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("storage key '{key}' is not a plain name"));
    }
    let numel = numel.as_usize("storage size")?;
    numel
        .checked_mul(kind.element_size())
        .ok_or_else(|| format!("storage '{key}' of {numel} elements overflows"))?;
    Ok(Storage {
        kind: *kind,
        key,
        numel,
    })
}

/// Applies one of the known globals to its arguments (`REDUCE`).
fn reduce(callable: &Value, args: &Value) -> Res<Value> {
    let Value::Global(global) = callable else {
        return Err(format!("REDUCE of a {}", callable.kind()));
    };
    let args = args.items("REDUCE arguments")?;
    match global {
        Global::RebuildTensor => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
            };
            let Value::Storage(storage) = storage else {
                return Err(format!("_rebuild_tensor_v2 of a {}", storage.kind()));
            };
            let tensor = TensorRef::new(
                storage.clone(),
                offset.as_usize("tensor offset")?,
                size.sizes("tensor size")?,
                stride.sizes("tensor stride")?,
            )?;
            Ok(Value::Tensor(Rc::new(tensor)))
        }
        Global::RebuildParameter => match args.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::OrderedDict => {
            let dict: Rc<RefCell<Vec<(Value, Value)>>> = Rc::default();
            if let Some(pairs) = args.first() {
                for pair in pairs.items("OrderedDict items")? {
                    let pair = pair.items("OrderedDict item")?;
                    let [key, value] = pair.as_slice() else {
                        return Err("OrderedDict item is not a pair".into());
                    };
                    dict.borrow_mut().push((key.clone(), value.clone()));
                }
            }
            Ok(Value::Dict(dict))
        }
        Global::RestoreTypeTag | Global::BuildList => args
            .into_iter()
            .next()
            .ok_or_else(|| "torch.jit._pickle helper without arguments".into()),
        Global::Class(name) => Ok(Value::Object(Rc::new(RefCell::new(Object {
            class: name.clone(),
            state: Value::None,
        })))),
        Global::Storage(_) => Err("a storage class cannot be called".into()),
    }
}
