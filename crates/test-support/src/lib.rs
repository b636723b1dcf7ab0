#![warn(missing_docs)]
//! Helpers that the integration tests of several packages share, in one dev-only crate (never
//! published) instead of files included by path: the model package's tests and the CLI package's
//! WGPU tests check the encoders against the same references, and the train package's tests and
//! the CLI's WGPU tests run the same training-step check, each on its own backend.
//!
//! - [`reference`]: the reference fixtures in `tests/fixtures/` and the checks of a CLIP against
//!   them;
//! - `train_step` (feature `train-step`): the PyTorch reference's MoCoOp, CoOp, KgCoOp and ProGrad
//!   steps and the check of one step against them, generic over the autodiff backend;
//!   `cocoop_step` the same for CoCoOp's model, `deep_step` for the deep-prompt methods' (VPT,
//!   IVLP, MaPLe); `official_step` the official MoCoOp code's step and the check of a
//!   `--recipe official` step against it.

pub mod reference;

use std::sync::{Mutex, MutexGuard};

/// Held by every test that runs an autodiff backward pass, so that no two run at once in one test
/// process. burn-autodiff 0.21 sweeps every graph of the process at the end of each backward pass
/// and can free the steps of a graph another thread is still building, silently dropping
/// gradients (tracel-ai/burn#5573, fixed after 0.21).
pub fn serial_autodiff() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
#[cfg(feature = "train-step")]
pub mod cocoop_step;
#[cfg(feature = "train-step")]
pub mod deep_step;
#[cfg(feature = "train-step")]
pub mod official_step;
#[cfg(feature = "train-step")]
pub mod train_step;
