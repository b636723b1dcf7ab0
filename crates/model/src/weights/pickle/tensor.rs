//! Storages and the strided tensor views that `_rebuild_tensor_v2` makes of them.

use std::rc::Rc;

use burn::tensor::{DType, TensorData};

use super::Res;

/// Most dimensions a tensor may have.
pub(crate) const MAX_DIMS: usize = 16;

/// The element type of a storage, from its `torch.*Storage` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageKind {
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
    pub(crate) fn from_class(name: &str) -> Option<Self> {
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

    pub(crate) fn element_size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::Bf16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    pub(crate) fn dtype(self) -> DType {
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
pub(crate) struct Storage {
    pub(crate) kind: StorageKind,
    pub(crate) key: String,
    pub(crate) numel: usize,
}

impl Storage {
    pub(crate) fn byte_len(&self) -> usize {
        // Checked when the storage is created.
        self.numel * self.kind.element_size()
    }
}

/// A strided view of a storage, from `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub(crate) storage: Rc<Storage>,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) stride: Vec<usize>,
}

impl TensorRef {
    pub(crate) fn new(
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
        // A view with more elements than its storage repeats elements (stride 0); no weight does,
        // and copying it out could take any amount of memory.
        if numel > storage.numel {
            return Err(format!(
                "tensor of size {shape:?} has more elements than storage '{}' of {}",
                storage.key, storage.numel
            ));
        }
        Ok(Self {
            storage,
            offset,
            shape,
            stride,
        })
    }

    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the view is row-major contiguous (dimensions of size 1 may have any stride).
    pub(crate) fn is_contiguous(&self) -> bool {
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
    pub(crate) fn covers_storage(&self) -> bool {
        self.offset == 0 && self.numel() == self.storage.numel && self.is_contiguous()
    }

    /// Copies the viewed elements out of the storage bytes, in row-major order.
    pub(crate) fn cut(&self, bytes: &[u8]) -> Res<TensorData> {
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
