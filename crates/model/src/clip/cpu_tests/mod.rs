//! The CPU fast paths of `crate::cpu` against the paths through Burn's operations that run where
//! they do not apply (and everywhere without the `cpu` feature): the same values and gradients.
//! Here rather than in `crate::cpu`, which knows nothing of the model's generic paths.

mod deep;
mod kernels;
mod linear;
