//! LayerNorm's backward pass over rows of `f32` values (its forward pass is the CPU backend's
//! own fused LayerNorm).

use super::lanes::{lanes_fold, lanes_fold_mapped};

/// The gradients of a LayerNorm's `x`, `gamma` and `beta` from those of its output.
pub(crate) struct LayerNormGrads {
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// [`LayerNormGrads`] from the output's gradients `grads`. Per row, with x̂ the normalised
/// values, r the inverse deviation and h = grads · gamma: x's gradient is
/// r (h − mean(h) − x̂ mean(h x̂)); gamma's and beta's are the sums over rows of grads · x̂ and of
/// grads, summed row after row (the same order whatever the thread count).
pub(crate) fn layer_norm_grads(
    x: &[f32],
    gamma: &[f32],
    grads: &[f32],
    eps: f32,
) -> LayerNormGrads {
    let width = gamma.len();
    let mut out = LayerNormGrads {
        x: vec![0.0f32; x.len()],
        gamma: vec![0.0f32; width],
        beta: vec![0.0f32; width],
    };
    let (mut normed, mut scaled) = (vec![0.0f32; width], vec![0.0f32; width]);
    let rows = x
        .chunks_exact(width)
        .zip(grads.chunks_exact(width))
        .zip(out.x.chunks_exact_mut(width));
    for ((x, grads), x_grads) in rows {
        let (mean, inverse) = row_moments(x, eps);
        for (((n, s), &x), (&g, &gamma)) in normed
            .iter_mut()
            .zip(scaled.iter_mut())
            .zip(x)
            .zip(grads.iter().zip(gamma))
        {
            *n = (x - mean) * inverse;
            *s = g * gamma;
        }
        let scaled_mean = lanes_fold(&scaled, 0.0, |a, b| a + b) / width as f32;
        let products: f32 = lanes_fold_mapped(&scaled, 0.0, |i, s| s * normed[i], |a, b| a + b);
        let product_mean = products / width as f32;
        for (i, d) in x_grads.iter_mut().enumerate() {
            *d = inverse * (scaled[i] - scaled_mean - normed[i] * product_mean);
        }
        for (i, &g) in grads.iter().enumerate() {
            out.gamma[i] += g * normed[i];
            out.beta[i] += g;
        }
    }
    out
}

/// The mean of `row` and the inverse of its standard deviation with `eps` added to the variance
/// (the mean of squared deviations, as PyTorch's LayerNorm computes it).
fn row_moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lanes_fold(row, 0.0, |a, b| a + b) / n;
    let squares = lanes_fold_mapped(row, 0.0, |_, v| (v - mean) * (v - mean), |a, b| a + b);
    (mean, (squares / n + eps).sqrt().recip())
}
