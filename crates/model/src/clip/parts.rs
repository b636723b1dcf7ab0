//! Cutting a batch of independent items into parts that run on threads of their own, for Burn's
//! CPU backend, and finding out when that must not happen (autodiff tracking a parameter).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::cpu;

/// Into how many parts a batch of `batch` independent items is cut so that each runs on a thread
/// of its own: one per CPU thread (rayon's count, so `RAYON_NUM_THREADS` applies) on Burn's CPU
/// backend, whose elementwise operations (activations, copies, residual adds) run on one core
/// each, so that one sequence of them per thread keeps every core busy; only its matmuls, softmax
/// and LayerNorm spread over the cores on their own. A GPU backend queues work asynchronously and
/// gets one part, as every backend does without the crate's `cpu` feature.
pub fn cpu_parts<B: Backend>(device: &B::Device, batch: usize) -> usize {
    cpu::threads::<B>(device).map_or(1, |threads| threads.min(batch).max(1))
}

/// Runs `job` on each item on a thread of its own and returns the results in order (a panic in a
/// job is re-raised here): how a batch cut by [`cpu_parts`] runs.
pub fn on_threads<T: Send, R: Send>(items: Vec<T>, job: impl Fn(T) -> R + Sync) -> Vec<R> {
    let job = &job;
    std::thread::scope(|scope| {
        let running: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || job(item)))
            .collect();
        running
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Whether autodiff tracks any float parameter of `module` (visual LN tuning trains the image
/// encoder's LayerNorms).
pub fn tracks_gradients<B: Backend, M: Module<B>>(module: &M) -> bool {
    let mut tracked = TracksGradients(false);
    module.visit(&mut tracked);
    tracked.0
}

/// Finds whether any float parameter of a module is tracked by autodiff.
struct TracksGradients(bool);

impl<B: Backend> ModuleVisitor<B> for TracksGradients {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0 |= param.val().is_require_grad();
    }
}
