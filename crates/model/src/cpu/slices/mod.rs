//! Layer 1 of the CPU fast paths: the math, on `f32` slices and nothing else. No Burn type
//! appears here, so each loop can be read, tested and tuned on its own.
//!
//! Burn's CPU backend computes exponentials (the C library's `expf`) and erf one element at a
//! time, each scaling, masking, reduction and product as a pass of its own, and attention with its
//! heads copied in and out of head-major order: together about a quarter of an image-encoder
//! forward pass (`perf record` on `mocoop bench --cases encode-image`). Here each of those is one
//! pass over the buffer with an exponential the compiler vectorises ([`curves`], run eight lanes
//! wide by [`wide`]), attention reads q, k and v where they lie ([`attention`]), and a linear
//! layer's products run its activation on each chunk of rows right after computing it
//! ([`products`]).

mod attention;
mod curves;
mod lanes;
mod norm;
mod products;
mod wide;

pub(super) use attention::{attention_grads, attention_values};
pub(super) use norm::{LayerNormGrads, layer_norm_grads};
pub(super) use products::{Rhs, products};
pub(super) use wide::{activate_in_place, activation_grads};
