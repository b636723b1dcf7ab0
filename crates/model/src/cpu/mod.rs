//! The CPU fast paths: the transformer's hot operations written out for Burn's CPU backend
//! (burn-flex), with and without autodiff, where Burn's own operations leave most of the cores or
//! most of each vector idle. Four layers, each using only those below it:
//!
//! 1. `slices`: the math on `f32` slices, knowing nothing of Burn: a vectorised exponential, the
//!    MLP activations and their derivatives, softmax rows, LayerNorm's backward pass, attention
//!    per head, and the linear layers' products with what follows them.
//! 2. `kernels`: that math on the CPU backend's own tensors (`FlexTensor`).
//! 3. `autodiff`: the kernels as operations of Burn's autodiff on that backend
//!    (`Autodiff<Flex>`), each with a backward pass of its own.
//! 4. `dispatch`: the only place that knows which backend the model runs on. The model is
//!    generic over `B: Backend` and calls the functions re-exported here; each finds out at run
//!    time whether its tensors are the CPU backend's (a downcast of their primitive; the backend's
//!    name for decisions with no tensor at hand) and then runs a kernel or an autodiff operation,
//!    or hands its inputs back for the model to run Burn's operations. No layer below needs a
//!    backend check, and no code outside asks which backend it is on.
//!
//! All of it is behind the crate's `cpu` feature (on by default). Without it, `absent` takes the
//! dispatch point's place and hands every input back: the crate then does not depend on
//! burn-flex, and the model runs Burn's operations on every backend: the same results up to
//! rounding, slower on the CPU.

#[cfg(feature = "cpu")]
mod autodiff;
#[cfg(feature = "cpu")]
mod dispatch;
#[cfg(feature = "cpu")]
mod kernels;
#[cfg(feature = "cpu")]
mod slices;

#[cfg(not(feature = "cpu"))]
mod absent;
#[cfg(not(feature = "cpu"))]
use absent as dispatch;

pub(crate) use dispatch::{activate, attention, layer_norm, linear, threads, unfused_attention};
