//! The pickle virtual machine: a loop over opcodes with an explicit stack and memo.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::{Global, Object, Res, Storage, TensorRef, Value, resolve_global};

/// Most values a pickle may create (pushed, memoised or copied into containers): far above the few
/// thousand of a CLIP checkpoint, far below what would exhaust memory (each value is a few words).
const MAX_VALUES: usize = 1 << 23;
/// Most arguments a known global takes (`_rebuild_tensor_v2` takes six or seven).
const MAX_ARGS: usize = 8;

/// A pickle interpreter for the opcodes that `torch.save` and `torch.jit.save` emit (protocols 2–5,
/// binary opcodes only).
pub(super) struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Values created so far, against [`MAX_VALUES`].
    created: usize,
}

impl<'a> Machine<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            created: 0,
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

    /// Counts `n` newly created values against [`MAX_VALUES`].
    fn create(&mut self, n: usize) -> Res<()> {
        self.created = self.created.saturating_add(n);
        if self.created > MAX_VALUES {
            return Err(format!(
                "the pickle creates more than {MAX_VALUES} values; refusing to go on"
            ));
        }
        Ok(())
    }

    fn push(&mut self, value: Value) -> Res<()> {
        self.create(1)?;
        self.stack.push(value);
        Ok(())
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
        self.create(1)?;
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
        self.push(value)?;
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

    pub(super) fn run(mut self) -> Res<Value> {
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
                    self.push(top)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(v.into()))?;
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
                    self.push(Value::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    self.bytes(8)?;
                    self.push(Value::Float)?;
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let s = self.string(n)?;
                    self.push(s)?;
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(s)?;
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.string(n)?;
                    self.push(s)?;
                }
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                b']' => self.push(Value::List(Rc::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))))?;
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
                b'}' => self.push(Value::Dict(Rc::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Rc::default()))?;
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
                    self.push(Value::Global(resolve_global(module, name)?))?;
                }
                0x93 => {
                    let name = self.pop()?.as_str("STACK_GLOBAL name")?;
                    let module = self.pop()?.as_str("STACK_GLOBAL module")?;
                    self.push(Value::Global(resolve_global(&module, &name)?))?;
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
                    self.push(Value::Storage(Rc::new(storage)))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(&callable, &args)?;
                    self.push(value)?;
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
                    self.push(value)?;
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

    /// Applies one of the known globals to its arguments (`REDUCE`).
    fn reduce(&mut self, callable: &Value, args: &Value) -> Res<Value> {
        let Value::Global(global) = callable else {
            return Err(format!("REDUCE of a {}", callable.kind()));
        };
        let args = args.items("REDUCE arguments", MAX_ARGS)?;
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
                    let pairs = pairs.items("OrderedDict items", MAX_VALUES)?;
                    self.create(pairs.len())?;
                    for pair in pairs {
                        let pair = pair.items("OrderedDict item", 2)?;
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
}

/// Parses a persistent id `('storage', torch.XStorage, key, location, numel)`.
fn persistent_storage(pid: &Value) -> Res<Storage> {
    let items = pid.items("persistent id", MAX_ARGS)?;
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
