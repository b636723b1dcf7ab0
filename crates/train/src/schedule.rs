//! The learning-rate schedule of a run as a burn `LrScheduler`.

use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

use crate::config::{OptimConfig, epoch_lr};

/// The epoch-wise schedule as a burn `LrScheduler` (stepped once per iteration by the learner;
/// the rate changes only when an epoch starts).
#[derive(Debug, Clone)]
pub struct EpochSchedule {
    optim: OptimConfig,
    iters_per_epoch: usize,
    iteration: usize,
}

impl EpochSchedule {
    /// The schedule of `optim` with `iters_per_epoch` steps per epoch.
    pub fn new(optim: OptimConfig, iters_per_epoch: usize) -> Self {
        Self {
            optim,
            iters_per_epoch: iters_per_epoch.max(1),
            iteration: 0,
        }
    }

    /// The schedule after `steps` iterations (a resumed run).
    pub fn after(mut self, steps: usize) -> Self {
        self.iteration = steps;
        self
    }
}

impl LrScheduler for EpochSchedule {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let epoch = self.iteration / self.iters_per_epoch;
        self.iteration += 1;
        epoch_lr(&self.optim, epoch)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}
