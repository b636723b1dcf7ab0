//! The curves of the host loops, one value (or one softmax row) at a time: a branch-free
//! exponential, QuickGELU and GELU with their derivatives, and softmax with its gradient. All are
//! `#[inline(always)]` so that they compile into the AVX2 code that `wide` builds around them.

use super::lanes::lanes_fold;
use crate::config::QUICK_GELU_SLOPE as SLOPE;

/// `row[..visible]` becomes `softmax(scale · row[..visible])`, the rest zeros.
#[inline(always)]
pub(super) fn softmax_in_place(row: &mut [f32], scale: f32, visible: usize) {
    let (seen, hidden) = row.split_at_mut(visible);
    let max = lanes_fold(seen, f32::NEG_INFINITY, f32::max);
    seen.iter_mut().for_each(|v| *v = exp(scale * (*v - max)));
    let inverse = lanes_fold(seen, 0.0, |a, b| a + b).recip();
    seen.iter_mut().for_each(|v| *v *= inverse);
    hidden.fill(0.0);
}

/// `grads` of one softmax row `probs` become `probs ⊙ (grads − ⟨probs, grads⟩)`, the gradients
/// of its inputs (a hidden position has probability 0 and gets 0).
#[inline(always)]
pub(super) fn softmax_grads(probs: &[f32], grads: &mut [f32]) {
    grads.iter_mut().zip(probs).for_each(|(g, p)| *g *= p);
    let dot = lanes_fold(grads, 0.0, |a, b| a + b);
    grads.iter_mut().zip(probs).for_each(|(g, p)| *g -= p * dot);
}

/// Applies QuickGELU to each value.
#[inline(always)]
pub(super) fn quick_gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v /= 1.0 + exp(-SLOPE * *v);
    }
}

/// Multiplies each gradient by QuickGELU's derivative at its value: `s + 1.702 x s (1 - s)`
/// with `s = σ(1.702 x)`.
#[inline(always)]
pub(super) fn quick_gelu_grads(values: &[f32], grads: &mut [f32]) {
    for (g, &x) in grads.iter_mut().zip(values) {
        let s = 1.0 / (1.0 + exp(-SLOPE * x));
        *g *= s + SLOPE * x * s * (1.0 - s);
    }
}

/// Applies GELU to each value: `x · Φ(x) = x - x · erfc(x / √2) / 2`, with the Chebyshev fit of
/// erfc from Numerical Recipes (`erfc(z) = t · e^{-z² + P(t)}`, `t = 1 / (1 + z / 2)` for
/// `z ≥ 0`, relative error below 1.2e-7). For `x < 0`, `x · Φ(x) = x · erfc(|x| / √2) / 2`
/// directly, so the small values there keep their relative precision; the choice is a select, so
/// the loop vectorises.
#[inline(always)]
pub(super) fn gelu_in_place(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        let tail = x * half_erfc(x.abs() * std::f32::consts::FRAC_1_SQRT_2);
        *v = if x < 0.0 { tail } else { x - tail };
    }
}

/// Multiplies each gradient by GELU's derivative at its value, `Φ(x) + x φ(x)`, with Φ from
/// the fit of [`gelu_in_place`] and the normal density `φ(x) = e^{-x²/2} / √(2π)`.
#[inline(always)]
pub(super) fn gelu_grads(values: &[f32], grads: &mut [f32]) {
    const INV_SQRT_TAU: f32 = 0.398_942_3;
    for (g, &x) in grads.iter_mut().zip(values) {
        let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let tail = half_erfc(z);
        let cdf = if x < 0.0 { tail } else { 1.0 - tail };
        *g *= cdf + x * INV_SQRT_TAU * exp(-z * z);
    }
}

/// `erfc(z) / 2` for `z ≥ 0`, from the Chebyshev fit described at [`gelu_in_place`].
#[inline(always)]
fn half_erfc(z: f32) -> f32 {
    const P: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = P.iter().rev().fold(0.0, |acc, c| acc * t + c);
    0.5 * t * exp(p - z * z)
}

/// `e^x` to within a few units in the last place, branch-free so that loops over it vectorise
/// (Cephes' `expf`: `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, and
/// `2^n` built in the exponent bits). Inputs are clamped to `[-87, 88]`, where `e^x` and `2^n`
/// are normal floats; QuickGELU only needs `e^x` to saturate there.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n in the exponent bits, read off the integer n held in the low mantissa bits of
    // n + 1.5 · 2^23 (an integer operation, where a float-to-int cast would check for overflow).
    let biased = (n + ROUND)
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let two_n = f32::from_bits(biased << 23);
    e_r * two_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_agrees_with_the_standard_library() {
        let mut worst = 0.0f32;
        // Inside the clamp (`-87.0 + 1e-3` as f32 is above -87).
        for i in -86_999..=87_999 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    #[test]
    fn gelu_matches_the_normal_cdf_and_saturates() {
        // x · Φ(x), with Φ from tables of the normal distribution.
        let known = [
            (-3.0, 0.001_349_898_031_630_1),
            (-1.0, 0.158_655_253_931_457_07),
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (2.0, 0.977_249_868_051_820_8),
        ];
        for (x, phi) in known {
            let mut got = [x as f32];
            gelu_in_place(&mut got);
            let want = (x * phi) as f32;
            assert!(
                (got[0] - want).abs() <= 1e-6 * want.abs(),
                "GELU({x}) = {}, not {want}",
                got[0]
            );
        }
        let mut extremes = [-1e30, -60.0, 60.0, 1e30];
        gelu_in_place(&mut extremes);
        assert_eq!(
            extremes.map(|v| v.abs() < 1e-30),
            [true, true, false, false]
        );
        assert_eq!(extremes[2..], [60.0, 1e30]);
    }

    #[test]
    fn quick_gelu_matches_its_definition_and_saturates() {
        let inputs = [
            -1e30, -200.0, -60.0, -3.5, -1.0, -1e-3, 0.0, 1e-3, 0.7, 4.0, 60.0, 1e30,
        ];
        let mut got = inputs;
        quick_gelu_in_place(&mut got);
        for (x, g) in inputs.iter().zip(got) {
            let want = (f64::from(*x) / (1.0 + (-1.702 * f64::from(*x)).exp())) as f32;
            let tolerance = 1e-6 * want.abs().max(1.0);
            assert!(
                (g - want).abs() <= tolerance,
                "QuickGELU({x}) = {g}, not {want}"
            );
        }
    }
}
