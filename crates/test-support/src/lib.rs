#![warn(missing_docs)]
//! Helpers that the integration tests of several packages share, in one dev-only crate (never
//! published) instead of files included by path: the model package's tests and the CLI package's
//! WGPU tests check the encoders against the same references, and the train package's tests and
//! the CLI's WGPU tests run the same training-step check, each on its own backend.
//!
//! - [`reference`]: the reference fixtures in `tests/fixtures/` and the checks of a CLIP against
//!   them;
//! - `train_step` (feature `train-step`): the PyTorch reference's MoCoOp and CoOp steps and the
//!   check of one step against them, generic over the autodiff backend.

pub mod reference;
#[cfg(feature = "train-step")]
pub mod train_step;
