//! The package's integration tests, one module per subject, built into a single test binary:
//! each separate binary compiled Burn's generic code for itself and linked it again, which made
//! the test build several times slower than the tests themselves.

mod bench;
mod cli;
mod common;
mod data_parallel;
mod demo;
mod grid;
mod groups;
mod inspect;
mod official;
mod resnet;
mod resume;
mod train_eval;
#[cfg(feature = "wgpu")]
mod wgpu;
