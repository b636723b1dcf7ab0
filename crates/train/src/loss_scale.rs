//! Dynamic loss scaling for f16 training, with PyTorch `GradScaler`'s rule and defaults.
//!
//! Gradients that pass through an f16 encoder underflow to zero below 6e-8. The loss is multiplied
//! by `scale` before the backward pass and the f32 gradients of the trainable tensors are divided
//! by it again. A step whose gradients are not finite is skipped (no update, momentum untouched)
//! and the scale halves; after [`GROWTH_INTERVAL`] finite steps in a row it doubles.

use serde::{Deserialize, Serialize};

/// The first scale (`GradScaler(init_scale=2**16)`).
pub const INITIAL_SCALE: f32 = 65536.0;
/// Finite steps in a row after which the scale doubles.
pub const GROWTH_INTERVAL: u32 = 2000;

/// The scaler's state; saved in every resumable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The factor the loss is multiplied by.
    pub scale: f32,
    /// Finite steps since the scale last changed.
    pub good_steps: u32,
    /// Steps skipped so far because their gradients were not finite.
    #[serde(default)]
    pub skipped: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScale {
    /// Updates the scale after a step whose unscaled gradients were `finite` (or not).
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScale::default();
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, INITIAL_SCALE);
        s.update(false);
        assert_eq!(
            (s.scale, s.good_steps, s.skipped),
            (INITIAL_SCALE / 2.0, 0, 1)
        );
        for _ in 0..GROWTH_INTERVAL {
            s.update(true);
        }
        assert_eq!((s.scale, s.good_steps), (INITIAL_SCALE, 0));
    }
}
