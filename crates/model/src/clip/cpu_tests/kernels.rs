//! The host loops (attention, the activations, LayerNorm) against Burn's operations, on the CPU
//! backend with and without autodiff.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::clip::attention::attention_by_operations;
use crate::clip::linear::activate_by_operations;
use crate::config::Activation;
use crate::cpu;

/// Deterministic values in about [-6, 6].
fn values<B: Backend, const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n).map(|i| 6.0 * ((i as f32) * 0.618).sin()).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn host<const D: usize>(f: impl Fn(Tensor<Flex, D>) -> Tensor<Flex, D>, s: [usize; D]) -> Vec<f32> {
    f(values(s)).into_data().to_vec().unwrap()
}

fn assert_close(what: &str, host: &[f32], ops: &[f32], tolerance: f32) {
    assert_eq!(host.len(), ops.len());
    for (i, (h, o)) in host.iter().zip(ops).enumerate() {
        assert!(
            (h - o).abs() <= tolerance * o.abs().max(1.0),
            "{what}[{i}]: {h} vs {o}"
        );
    }
}

/// Each host loop beside the same function through Burn's operations, with the input shape it is
/// tried on.
type Pair<B> = (
    String,
    Box<dyn Fn(Tensor<B, 3>) -> Tensor<B, 3>>,
    Box<dyn Fn(Tensor<B, 3>) -> Tensor<B, 3>>,
    [usize; 3],
);

fn pairs<B: Backend>() -> Vec<Pair<B>> {
    // 11 keys: the softmax's eight-lane folds see a whole chunk and a remainder.
    let (shape, heads) = ([2, 11, 3 * 12], 3);
    let mut pairs: Vec<Pair<B>> = [false, true]
        .into_iter()
        .map(|causal| -> Pair<B> {
            (
                format!("attention (causal {causal})"),
                Box::new(move |qkv| cpu::attention(qkv, heads, causal).unwrap()),
                Box::new(move |qkv| attention_by_operations(qkv, heads, causal)),
                shape,
            )
        })
        .collect();
    for (name, curve) in [
        ("QuickGELU", Activation::QuickGelu),
        ("GELU", Activation::Gelu),
    ] {
        pairs.push((
            name.into(),
            Box::new(move |x| cpu::activate(x, curve).unwrap()),
            Box::new(move |x| activate_by_operations(x, curve)),
            [3, 7, 33],
        ));
    }
    pairs
}

#[test]
fn host_loops_agree_with_burn_operations() {
    for (what, host_loop, by_operations, shape) in pairs::<Flex>() {
        let ops = host(&by_operations, shape);
        assert_close(&what, &host(&host_loop, shape), &ops, 1e-6);
    }
}

/// The input gradient of `(f(x) · w).sum()` at the test values, with fixed weights `w`, and
/// the forward values.
fn grads(
    f: &dyn Fn(Tensor<Autodiff<Flex>, 3>) -> Tensor<Autodiff<Flex>, 3>,
    shape: [usize; 3],
) -> (Vec<f32>, Vec<f32>) {
    let x = values::<Autodiff<Flex>, 3>(shape).require_grad();
    let y = f(x.clone());
    let n = y.shape().num_elements();
    let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos()).collect();
    let w = Tensor::<Autodiff<Flex>, 1>::from_floats(w.as_slice(), &x.device());
    let loss = (y.clone().reshape([n]) * w).sum();
    let grads = loss.backward();
    let grad = x.grad(&grads).expect("x is tracked");
    (
        grad.into_data().to_vec().unwrap(),
        y.into_data().to_vec().unwrap(),
    )
}

#[test]
fn autodiff_operations_agree_with_burn_operations() {
    // Under autodiff the host loops run as operations of their own (`cpu::autodiff`): their
    // values are the host loops' bits, and their gradients are those of Burn's operations,
    // which Burn's autodiff derives on its own.
    for ((what, host_loop, by_operations, shape), (_, plain, ..)) in
        pairs::<Autodiff<Flex>>().into_iter().zip(pairs::<Flex>())
    {
        let (got, forward) = grads(&host_loop, shape);
        let (want, _) = grads(&by_operations, shape);
        assert_eq!(forward, host(&plain, shape), "{what}: forward values");
        let scale = want.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.1, "{what}: gradients too small to compare");
        let tolerance = 1e-5 * scale;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance,
                "{what} gradient[{i}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn layer_norm_operation_agrees_with_burn_operations() {
    // The LayerNorm autodiff operation against Burn's LayerNorm under autodiff (its own
    // decomposition, which Burn's autodiff differentiates): values, and the gradients of x,
    // gamma and beta.
    type Ad = Autodiff<Flex>;
    // An epsilon large beside the rows' variances (about 18), so that a lost one shows.
    let (shape, eps) = ([3, 7, 33], 4.0);
    let device = Default::default();
    let mut ln = burn::nn::LayerNormConfig::new(33)
        .with_epsilon(eps)
        .init::<Ad>(&device);
    let scale: Vec<f32> = (0..33).map(|i| 1.0 + 0.3 * (i as f32).sin()).collect();
    let shift: Vec<f32> = (0..33).map(|i| 0.2 * (i as f32).cos()).collect();
    let param = |v: &[f32]| Param::from_tensor(Tensor::from_floats(v, &device));
    ln.gamma = param(&scale);
    ln.beta = Some(param(&shift));
    let run = |f: &dyn Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>| {
        let x = values::<Ad, 3>(shape).require_grad();
        let y = f(x.clone());
        let n = y.shape().num_elements();
        let w: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.377).cos()).collect();
        let w = Tensor::<Ad, 1>::from_floats(w.as_slice(), &device);
        let grads = (y.clone().reshape([n]) * w).sum().backward();
        let beta = ln.beta.as_ref().expect("a shift");
        [
            y.into_data(),
            x.grad(&grads).expect("x is tracked").into_data(),
            ln.gamma
                .val()
                .grad(&grads)
                .expect("gamma is tracked")
                .into_data(),
            beta.val()
                .grad(&grads)
                .expect("beta is tracked")
                .into_data(),
        ]
        .map(|data| data.to_vec::<f32>().unwrap())
    };
    let got = run(&|x| cpu::layer_norm(&ln, eps, x).unwrap());
    let want = run(&|x| ln.forward(x));
    for ((what, got), want) in ["values", "x", "gamma", "beta"].iter().zip(got).zip(want) {
        let scale = want.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.1, "{what}: too small to compare");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g} vs {w}");
        }
    }
}

#[test]
fn a_causal_query_ignores_later_keys() {
    // Changing the last token's q, k and v changes no earlier output row.
    let (shape, heads) = ([1, 9, 3 * 8], 2);
    let changed = |qkv: Tensor<Flex, 3>| {
        let last = Tensor::full([1, 1, 3 * 8], 5.0, &qkv.device());
        qkv.slice_assign([0..1, 8..9, 0..24], last)
    };
    let plain = host(|qkv| cpu::attention(qkv, heads, true).unwrap(), shape);
    let edited = host(
        |qkv| cpu::attention(changed(qkv), heads, true).unwrap(),
        shape,
    );
    assert_eq!(plain[..8 * 8], edited[..8 * 8]);
    assert_ne!(plain[8 * 8..], edited[8 * 8..]);
}
