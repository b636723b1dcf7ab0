//! Half-precision compute for the frozen CLIP, with f32 master copies of what trains.
//!
//! [`Precision`] says in which float type the encoders' matrix work runs. The cast happens once, to
//! the frozen weights ([`Clip::with_precision`](crate::Clip::with_precision)); the encoders then
//! follow the dtype of their weights: inputs are cast to it on entry and features are returned in
//! f32. This is the "fp16" way of the CoOp code bases (the whole CLIP in half precision), except
//! that four things always stay in f32, as they would under PyTorch's autocast:
//! - LayerNorm parameters, and the normalisation itself ([`norm`]): these are what visual LN tuning
//!   trains, so they are their own f32 master copies;
//! - the token embedding table (a lookup, no arithmetic), so that soft-prompt contexts start from
//!   the exact embeddings of their words;
//! - `logit_scale`;
//! - everything outside the encoders: soft-prompt contexts, router, text bias, losses. Contexts are
//!   cast to the compute type where they enter the text encoder, so their gradients arrive in f32.

use std::fmt;

use burn::module::{ModuleMapper, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::cpu;

/// The float type of the encoders' compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision (the default; bit-for-bit reproducible on the CPU).
    #[default]
    #[value(alias = "fp32", alias = "float32")]
    F32,
    /// IEEE half: the usual choice on GPUs without bf16; training needs loss scaling.
    #[value(alias = "fp16", alias = "float16", alias = "half")]
    F16,
    /// bfloat16: f32's range with 8 bits of mantissa; no loss scaling needed.
    #[value(alias = "bfloat16")]
    Bf16,
}

impl Precision {
    /// The Burn float type.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether gradients computed at this precision must be protected from underflow by scaling
    /// the loss (f16's smallest normal number is 6e-5).
    pub fn needs_loss_scaling(self) -> bool {
        self == Self::F16
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

/// The float type of a parameter, i.e. the compute type of the layer that owns it.
pub fn dtype_of<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> FloatDType {
    param.val().dtype().into()
}

/// Applies a LayerNorm in f32 (its parameters are f32) and returns the result in `x`'s type: for
/// f32 values as one operation of `crate::cpu` where it has one (on the CPU under autodiff),
/// Burn's LayerNorm elsewhere. `eps` is the LayerNorm's own (Burn keeps it private), for that
/// operation.
pub fn norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match FloatDType::from(x.dtype()) {
        half @ (FloatDType::F16 | FloatDType::BF16) => {
            ln.forward(x.cast(FloatDType::F32)).cast(half)
        }
        _ => cpu::layer_norm(ln, eps, x).unwrap_or_else(|x| ln.forward(x)),
    }
}

/// Casts every float parameter of a module to one type, except those of its LayerNorms and the
/// token embedding.
pub(crate) struct CastWeights {
    /// The target type.
    pub dtype: FloatDType,
    /// How deep the walk is inside modules that stay f32 (parameters there are left alone).
    inside_kept: usize,
}

impl CastWeights {
    /// A mapper casting to `precision`.
    pub fn new(precision: Precision) -> Self {
        Self {
            dtype: precision.dtype(),
            inside_kept: 0,
        }
    }
}

/// Whether the field `name` of a `container_type` (Burn's naming: `Struct:Type`) stays f32.
fn kept_f32(name: &str, container_type: &str) -> bool {
    container_type == "Struct:LayerNorm" || name == "token_embedding"
}

impl<B: Backend> ModuleMapper<B> for CastWeights {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if kept_f32(name, container_type) {
            self.inside_kept += 1;
        }
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        if kept_f32(name, container_type) {
            self.inside_kept -= 1;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.inside_kept > 0 {
            return param;
        }
        let dtype = self.dtype;
        param.map(|t| {
            let require_grad = t.is_require_grad();
            // A fresh leaf of the new type (a cast of a leaf is not one).
            t.cast(dtype)
                .set_require_grad(false)
                .set_require_grad(require_grad)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_precisions() {
        use clap::ValueEnum;
        // As the command line reads them (`ignore_case` on every `--precision`).
        let parse = |text: &str| Precision::from_str(text, true);
        for (text, p) in [
            ("f32", Precision::F32),
            ("FP16", Precision::F16),
            ("half", Precision::F16),
            ("bf16", Precision::Bf16),
            ("bfloat16", Precision::Bf16),
        ] {
            assert_eq!(parse(text), Ok(p));
        }
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(parse(&p.to_string()), Ok(p));
        }
        assert!(parse("f8").is_err());
        let names: Vec<String> = Precision::value_variants()
            .iter()
            .map(|p| p.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, ["f32", "f16", "bf16"]);
        assert!(Precision::F16.needs_loss_scaling());
        assert!(!Precision::Bf16.needs_loss_scaling());
    }
}
