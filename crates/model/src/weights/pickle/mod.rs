//! A restricted pickle reader for the pickles inside PyTorch archives (`data.pkl` of `torch.save`
//! and `torch.jit.save` files).
//!
//! It executes nothing: the only globals it knows are those tensor rebuilding needs
//! (`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, `torch.*Storage`,
//! `collections.OrderedDict`, the `torch.jit._pickle` container helpers) and `__torch__.*` classes,
//! which only ever become inert attribute bags. Any other global is an error. Every length is checked
//! against the input before anything is allocated; the machine is a loop over opcodes, never a
//! recursion, values are dropped iteratively, and the number of live values and of copied container
//! items is bounded, so no input can exhaust the stack, memory or time.

mod machine;
mod tensor;

use std::cell::RefCell;
use std::rc::Rc;

pub(crate) use tensor::{MAX_DIMS, Storage, StorageKind, TensorRef};

/// Errors of the pickle readers: a message, turned into a `WeightsError` naming the file by callers.
pub(crate) type Res<T> = Result<T, String>;

/// Runs a pickle to its `STOP` and returns the value it leaves.
pub(crate) fn parse(pickle: &[u8]) -> Res<Value> {
    machine::Machine::new(pickle).run()
}

/// The Python globals the reader understands; anything else is refused when named.
#[derive(Debug, Clone)]
pub(crate) enum Global {
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

pub(crate) fn resolve_global(module: &str, name: &str) -> Res<Global> {
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
pub(crate) struct Object {
    pub(crate) class: Rc<str>,
    pub(crate) state: Value,
}

/// A pickled value. Containers are shared (`Rc`) because the memo aliases them, and mutable because
/// pickles fill containers after memoising them.
#[derive(Clone)]
pub(crate) enum Value {
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
    pub(crate) fn kind(&self) -> String {
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

    pub(crate) fn as_int(&self, what: &str) -> Res<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(format!("{what}: expected an int, found {}", other.kind())),
        }
    }

    pub(crate) fn as_usize(&self, what: &str) -> Res<usize> {
        let i = self.as_int(what)?;
        usize::try_from(i).map_err(|_| format!("{what}: {i} is not a valid size"))
    }

    pub(crate) fn as_str(&self, what: &str) -> Res<Rc<str>> {
        match self {
            Value::Str(s) => Ok(s.clone()),
            other => Err(format!("{what}: expected a str, found {}", other.kind())),
        }
    }

    /// The items of a tuple or list of at most `max` items (checked before anything is copied).
    pub(crate) fn items(&self, what: &str, max: usize) -> Res<Vec<Value>> {
        let too_many = |len: usize| format!("{what}: {len} items, more than the {max} expected");
        match self {
            Value::Tuple(items) if items.len() > max => Err(too_many(items.len())),
            Value::Tuple(items) => Ok(items.as_ref().clone()),
            Value::List(items) => {
                let items = items.borrow();
                if items.len() > max {
                    return Err(too_many(items.len()));
                }
                Ok(items.clone())
            }
            other => Err(format!("{what}: expected a tuple, found {}", other.kind())),
        }
    }

    pub(crate) fn sizes(&self, what: &str) -> Res<Vec<usize>> {
        self.items(what, MAX_DIMS)?
            .iter()
            .map(|v| v.as_usize(what))
            .collect()
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
