//! The linear layers with what follows them, folded by `crate::cpu`, against Burn's operations,
//! on the CPU backend with and without autodiff.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, activation};

use crate::clip::linear::{Then, linear};
use crate::config::Activation;
use crate::cpu;

/// Deterministic values in about [-2, 2], different for each `seed`.
fn values<B: Backend, const D: usize>(shape: [usize; D], seed: f32) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n)
        .map(|i| 2.0 * ((i as f32) * 0.618 + seed).sin())
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// A `[7, 9]` linear layer.
fn layer<B: Backend>() -> Linear<B> {
    Linear {
        weight: Param::from_tensor(values([7, 9], 1.0)),
        bias: Some(Param::from_tensor(values([9], 2.0))),
    }
}

fn assert_close<B: Backend>(what: &str, got: Tensor<B, 3>, want: Tensor<B, 3>) {
    let (got, want) = (got.into_data(), want.into_data());
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let (got, want) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn fused_layers_agree_with_burn_operations() {
    let layer = layer::<Flex>();
    // 40 sequences of 5 positions are two products of `cpu::slices`' `chunk_rows`, the second shorter.
    for batch in [2, 40] {
        let x = || values([batch, 5, 7], 3.0);
        let residual = || values([batch, 5, 9], 4.0);
        let product = || layer.forward(x());
        let sigmoid_part = |y: Tensor<Flex, 3>| activation::sigmoid(y * 1.702);
        let cases: [(&str, Then<Flex>, Tensor<Flex, 3>); 4] = [
            ("bias", Then::Nothing, product()),
            (
                "QuickGELU",
                Then::Activate(Activation::QuickGelu),
                product() * sigmoid_part(product()),
            ),
            (
                "GELU",
                Then::Activate(Activation::Gelu),
                activation::gelu(product()),
            ),
            ("residual", Then::Add(residual()), residual() + product()),
        ];
        for (what, then, want) in cases {
            assert_close(
                &format!("{what} (batch {batch})"),
                linear(&layer, x(), then),
                want,
            );
        }
    }
    // x as a strided view: read through a contiguous copy.
    let strided = values::<Flex, 3>([5, 2, 7], 3.0).swap_dims(0, 1);
    let want = layer.forward(strided.clone());
    assert_close("strided x", linear(&layer, strided, Then::Nothing), want);
}

#[test]
fn a_residual_held_elsewhere_is_left_as_it_was() {
    // The residual's buffer becomes the output only where nothing else holds it.
    let residual = values::<Flex, 3>([2, 5, 9], 4.0);
    let before = residual.to_data();
    let _ = linear(
        &layer::<Flex>(),
        values([2, 5, 7], 3.0),
        Then::Add(residual.clone()),
    );
    assert_eq!(residual.into_data(), before);
}

/// The output's values and the gradients of x and of the residual.
type Step = [Tensor<Flex, 3>; 3];

/// What a step through a layer under autodiff gives: the output's values and the gradients
/// of x and of the residual for a loss weighting every output differently.
fn step(
    batch: usize,
    f: impl Fn(Tensor<Autodiff<Flex>, 3>, Tensor<Autodiff<Flex>, 3>) -> Tensor<Autodiff<Flex>, 3>,
) -> Step {
    let x = values([batch, 5, 7], 3.0).require_grad();
    let residual = values([batch, 5, 9], 4.0).require_grad();
    let y = f(x.clone(), residual.clone());
    let grads = (y.clone() * values([batch, 5, 9], 5.0)).sum().backward();
    let grad = |t: Tensor<Autodiff<Flex>, 3>| t.grad(&grads).expect("tracked");
    [y.inner(), grad(x), grad(residual)]
}

#[test]
fn frozen_layers_under_autodiff_agree_with_burn_autodiff() {
    // CLIP's layers are frozen in prompt learning: there the product, bias and residual are
    // one autodiff operation (`cpu::autodiff::frozen_linear`), whose values and gradients of
    // x and the residual must be those Burn's autodiff derives for its own operations.
    let frozen = layer::<Autodiff<Flex>>().no_grad();
    let fold = |x, residual| cpu::linear(&frozen, x, residual, None).expect("folds");
    // 40 sequences of 5 positions are two products of `cpu::slices`' `chunk_rows` each way.
    for batch in [2, 40] {
        let cases: [(&str, Step, Step); 3] = [
            (
                "bias",
                step(batch, |x, r| fold(x, None) * r),
                step(batch, |x, r| frozen.forward(x) * r),
            ),
            (
                "residual",
                step(batch, |x, r| fold(x, Some(r))),
                step(batch, |x, r| r + frozen.forward(x)),
            ),
            (
                "GELU after",
                step(batch, |x, r| {
                    linear(&frozen, x, Then::Activate(Activation::Gelu)) * r
                }),
                step(batch, |x, r| activation::gelu(frozen.forward(x)) * r),
            ),
        ];
        for (what, got, want) in cases {
            for (part, (got, want)) in ["values", "x grad", "residual grad"]
                .iter()
                .zip(got.into_iter().zip(want))
            {
                assert_close(&format!("{what} (batch {batch}): {part}"), got, want);
            }
        }
    }
    // A trained layer keeps Burn's operations, which give its weight a gradient.
    let trained = layer::<Autodiff<Flex>>();
    let x = values::<Autodiff<Flex>, 3>([2, 5, 7], 3.0).require_grad();
    assert!(cpu::linear(&trained, x, None, None).is_err());
}
