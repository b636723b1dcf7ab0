//! The package's integration tests, one module per subject, built into a single test binary:
//! each separate binary compiled Burn's generic code for itself and linked it again, which made
//! the test build several times slower than the tests themselves.

// The CPU fast path's thread parts; without the `cpu` feature every batch runs whole.
#[cfg(feature = "cpu")]
mod cpu_threads;
mod export;
mod hf_cache;
mod hostile_inputs;
mod open_clip;
mod parity;
mod precision;
mod preprocess;
mod presets;
mod torchscript;
mod weights;
