//! PromptSRC's Gaussian-weighted prompt aggregation (GPA): at the end of every epoch the learned
//! tensors, weighted by a Gaussian over the epoch's number, are added to a running sum; the run's
//! trained prompts are that sum once every epoch has been added. The weights of a run's epochs sum
//! to one, so the aggregate is a weighted mean of the epochs' prompts.
//!
//! The sum is kept on the host (the prompts are kilobytes to a few MB and change once an epoch),
//! in `f32` as the official code keeps its state dicts, and travels in the epoch checkpoints under
//! [`PREFIX`] so that a resumed run continues it.

use std::collections::BTreeMap;

use burn::tensor::TensorData;

use crate::TrainError;
use crate::config::SelfRegulation;

/// The checkpoint-name prefix of the running sum's tensors (`gpa.ctx.0`, …).
pub const PREFIX: &str = "gpa.";

/// The weights of epochs `1..=epochs`: the density of `N(mean, std²)` at each epoch's number,
/// divided by their sum (the official `get_gauss` normalised over the run's epochs). The
/// densities are taken relative to the largest, which cancels in the division and keeps epochs
/// far from the mean from all underflowing to zero.
pub fn epoch_weights(epochs: usize, mean: f64, std: f64) -> Vec<f64> {
    let exponent = |e: usize| -0.5 * ((e as f64 - mean) / std).powi(2);
    let top = (1..=epochs).map(exponent).fold(f64::NEG_INFINITY, f64::max);
    let density: Vec<f64> = (1..=epochs).map(|e| (exponent(e) - top).exp()).collect();
    let total: f64 = density.iter().sum();
    density.into_iter().map(|d| d / total).collect()
}

/// The running aggregate of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpa {
    /// Each epoch's weight, epoch 1 first.
    weights: Vec<f64>,
    /// Optimiser steps per epoch (told by the trainer; `None` before, when no epoch can end).
    steps_per_epoch: Option<usize>,
    /// The weighted sum so far, by the learned tensors' checkpoint names.
    sum: BTreeMap<String, TensorData>,
}

impl Gpa {
    /// An empty aggregate over `epochs` epochs, weighted as `regulation` says, for tensors named
    /// and shaped as `tensors`.
    pub fn new(
        regulation: &SelfRegulation,
        epochs: usize,
        tensors: &[(String, TensorData)],
    ) -> Self {
        let sum = tensors
            .iter()
            .map(|(name, data)| {
                let zeros = vec![0.0f32; data.num_elements()];
                (name.clone(), TensorData::new(zeros, data.shape.clone()))
            })
            .collect();
        Self {
            weights: epoch_weights(epochs, regulation.gpa_mean, regulation.gpa_std),
            steps_per_epoch: None,
            sum,
        }
    }

    /// Sets the optimiser steps of an epoch.
    pub fn set_steps_per_epoch(&mut self, steps: usize) {
        self.steps_per_epoch = Some(steps);
    }

    /// The epoch (1-based) that optimiser step `steps` (counted from 1) ends, if it ends one.
    fn epoch_ended_by(&self, steps: u64) -> Option<usize> {
        let per_epoch = self.steps_per_epoch? as u64;
        (steps > 0 && steps.is_multiple_of(per_epoch)).then_some((steps / per_epoch) as usize)
    }

    /// After optimiser step `steps`: when it ends an epoch, adds the learned tensors (`current`,
    /// read only then) times that epoch's weight.
    pub fn after_step(&mut self, steps: u64, current: impl FnOnce() -> Vec<(String, TensorData)>) {
        let Some(epoch) = self.epoch_ended_by(steps) else {
            return;
        };
        let Some(&weight) = self.weights.get(epoch - 1) else {
            return;
        };
        let weight = weight as f32;
        for (name, data) in current() {
            let values = data.convert::<f32>().to_vec::<f32>().expect("f32 tensors");
            let sum = self
                .sum
                .get_mut(&name)
                .expect("the aggregate covers every tensor");
            let mut acc = sum.to_vec::<f32>().expect("f32 sums");
            for (a, v) in acc.iter_mut().zip(values) {
                *a += weight * v;
            }
            *sum = TensorData::new(acc, sum.shape.clone());
        }
    }

    /// The aggregate, when step `steps` is the last of the run's last epoch; `None` before.
    pub fn aggregate(&self, steps: u64) -> Option<BTreeMap<String, TensorData>> {
        (self.epoch_ended_by(steps) == Some(self.weights.len())).then(|| self.sum.clone())
    }

    /// The running sum by checkpoint name (under [`PREFIX`]).
    pub fn tensors(&self) -> Vec<(String, TensorData)> {
        self.sum
            .iter()
            .map(|(name, data)| (format!("{PREFIX}{name}"), data.clone()))
            .collect()
    }

    /// The running sum of a checkpoint, each of its tensors taken out of `saved`.
    pub fn load(&mut self, saved: &mut BTreeMap<String, TensorData>) -> Result<(), TrainError> {
        for (name, sum) in self.sum.iter_mut() {
            let key = format!("{PREFIX}{name}");
            let data = saved
                .remove(&key)
                .ok_or_else(|| TrainError::Checkpoint(format!("missing tensor {key}")))?;
            if data.shape != sum.shape {
                return Err(TrainError::Checkpoint(format!(
                    "{key} has shape {:?}, expected {:?}",
                    data.shape, sum.shape
                )));
            }
            *sum = data.convert::<f32>();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regulation(mean: f64, std: f64) -> SelfRegulation {
        SelfRegulation {
            gpa_mean: mean,
            gpa_std: std,
            ..SelfRegulation::official()
        }
    }

    fn one(name: &str, values: &[f32]) -> Vec<(String, TensorData)> {
        vec![(
            name.into(),
            TensorData::new(values.to_vec(), [values.len()]),
        )]
    }

    #[test]
    fn epoch_weights_are_the_normalised_gaussian_densities() {
        // Mean 2, std 1 over 3 epochs: densities e^-0.5, 1, e^-0.5 (the prefactor cancels).
        let w = epoch_weights(3, 2.0, 1.0);
        let side = (-0.5f64).exp();
        let total = 1.0 + 2.0 * side;
        let want = [side / total, 1.0 / total, side / total];
        for (got, want) in w.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{w:?}");
        }
        // The official base-to-new configuration: 20 epochs around epoch 15, std 1.
        let w = epoch_weights(20, 15.0, 1.0);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let z = |e: f64| (-0.5 * (e - 15.0).powi(2)).exp();
        let total: f64 = (1..=20).map(|e| z(e as f64)).sum();
        assert!((w[14] - 1.0 / total).abs() < 1e-15 && w[14] > 0.39);
        assert!((w[12] - z(13.0) / total).abs() < 1e-15);
        // Far from the mean the weights still sum to one (no 0 / 0).
        let far = epoch_weights(2, 1000.0, 0.5);
        assert_eq!(far, vec![0.0, 1.0]);
    }

    #[test]
    fn the_aggregate_is_the_weighted_sum_of_each_epochs_prompts() {
        let mut gpa = Gpa::new(&regulation(2.0, 1.0), 3, &one("ctx.0", &[0.0, 0.0]));
        gpa.set_steps_per_epoch(2);
        let w = epoch_weights(3, 2.0, 1.0);
        let epoch_values = [[1.0f32, -2.0], [3.0, 0.5], [-1.0, 4.0]];
        let mut reads = 0;
        for step in 1..=6u64 {
            // Mid-epoch values must not enter the sum.
            let current = if step % 2 == 0 {
                epoch_values[step as usize / 2 - 1]
            } else {
                [100.0, 100.0]
            };
            gpa.after_step(step, || {
                reads += 1;
                one("ctx.0", &current)
            });
            assert_eq!(gpa.aggregate(step).is_some(), step == 6, "step {step}");
        }
        assert_eq!(reads, 3, "the prompts are read once per epoch");
        let got = gpa.aggregate(6).unwrap()["ctx.0"].to_vec::<f32>().unwrap();
        for k in 0..2 {
            let want: f64 = (0..3).map(|e| w[e] * f64::from(epoch_values[e][k])).sum();
            assert!((f64::from(got[k]) - want).abs() < 1e-6, "{got:?} vs {want}");
        }
    }

    #[test]
    fn the_running_sum_travels_in_checkpoints() {
        let shape = one("text_deep.1", &[0.0, 0.0, 0.0]);
        let mut gpa = Gpa::new(&regulation(1.0, 1.0), 2, &shape);
        gpa.set_steps_per_epoch(1);
        gpa.after_step(1, || one("text_deep.1", &[1.0, 2.0, 3.0]));
        let mut saved: BTreeMap<String, TensorData> = gpa.tensors().into_iter().collect();
        assert_eq!(saved.keys().collect::<Vec<_>>(), ["gpa.text_deep.1"]);
        let mut resumed = Gpa::new(&regulation(1.0, 1.0), 2, &shape);
        resumed.set_steps_per_epoch(1);
        resumed.load(&mut saved).unwrap();
        assert!(saved.is_empty());
        assert_eq!(resumed, gpa);
        let mut missing = BTreeMap::new();
        let err = resumed.load(&mut missing).unwrap_err().to_string();
        assert!(err.contains("gpa.text_deep.1"), "{err}");
    }
}
