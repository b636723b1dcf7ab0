//! Deep prompts through the CPU fast paths: a batch cut into thread parts gives the values and
//! prompt gradients of one part, and the half-precision encoders (which run Burn's own operations,
//! the fast paths taking f32 only) give the f32 fast paths' features up to their rounding.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::Precision;
use crate::clip::DeepPrompts;
use crate::clip::deep::three_layer_clip;

type Ad = Autodiff<Flex>;

/// Deterministic values in about [-1, 1], different for each `seed`.
fn values<B: Backend, const D: usize>(shape: [usize; D], seed: f32) -> Tensor<B, D> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.618 + seed).sin()).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `f` where `rayon::current_num_threads()` is `threads`.
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
        .install(f)
}

/// Image and text features of five inputs with tracked deep prompts on both towers (3 visual
/// tokens to depth 3, 2 text tokens after SOT to depth 3), then every prompt's gradient of a
/// weighted sum of the features.
fn prompted_features_and_grads() -> Vec<Vec<f32>> {
    let clip = three_layer_clip::<Ad>(4).no_grad();
    let visual: Vec<Tensor<Ad, 2>> = (0..3)
        .map(|k| values([3, 32], k as f32).require_grad())
        .collect();
    let text: Vec<Tensor<Ad, 2>> = (0..2)
        .map(|k| values([2, 32], 5.0 + k as f32).require_grad())
        .collect();
    let images = values::<Ad, 4>([5, 3, 32, 32], 9.0);
    let f = clip.vision.forward_prompted(images, &visual);
    let deep = DeepPrompts {
        start: 1,
        layers: text.clone(),
    };
    let eot = [6, 4, 7, 5, 6];
    let z = clip
        .text
        .forward_prompted(values([5, 8, 32], 11.0), &eot, &deep);
    let weights = values::<Ad, 2>([5, 16], 13.0);
    let grads = ((f.clone() + z.clone()) * weights).sum().backward();
    let mut out = vec![host(f), host(z)];
    for p in visual.iter().chain(&text) {
        out.push(host(p.grad(&grads).expect("a tracked prompt")));
    }
    out
}

#[test]
fn deep_prompts_in_thread_parts_match_one_part() {
    let one = in_pool(1, prompted_features_and_grads);
    let three = in_pool(3, prompted_features_and_grads);
    for (k, (a, b)) in one.iter().zip(&three).enumerate() {
        let largest = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(largest > 1e-6, "output {k} is all zeros");
        assert!(max_diff(a, b) < 1e-6, "output {k}: one part vs three");
    }
}

/// Autodiff records each part's nodes from its own thread: repeated, the five-part runs keep
/// giving every prompt the one-part gradient (graphs merged while another thread recorded into
/// one of them used to lose that thread's part of it, now and then).
#[test]
fn thread_parts_lose_no_prompt_gradient() {
    let one = in_pool(1, prompted_features_and_grads);
    for run in 0..300 {
        let five = in_pool(5, prompted_features_and_grads);
        for (k, (a, b)) in one.iter().zip(&five).enumerate() {
            assert!(
                max_diff(a, b) < 1e-6,
                "run {run}, output {k}: one part vs five"
            );
        }
    }
}

#[test]
fn half_precision_deep_prompts_follow_the_f32_fast_paths() {
    let visual: Vec<Tensor<Flex, 2>> = (0..3).map(|k| values([3, 32], k as f32)).collect();
    let images = || values::<Flex, 4>([2, 3, 32, 32], 9.0);
    let features = |precision: Precision, prompts: &[Tensor<Flex, 2>]| {
        let clip = three_layer_clip::<Flex>(4).with_precision(precision);
        host(clip.vision.forward_prompted(images(), prompts))
    };
    let full = features(Precision::F32, &visual);
    let plain = features(Precision::F32, &[]);
    let moved = max_diff(&full, &plain);
    assert!(moved > 1e-4, "the prompts change nothing ({moved})");
    for (precision, tolerance) in [(Precision::F16, 5e-3), (Precision::Bf16, 4e-2)] {
        let half = features(precision, &visual);
        let diff = max_diff(&full, &half);
        assert!(diff < tolerance, "{precision}: {diff} from f32");
        assert!(diff > 0.0, "{precision}: no half compute");
    }
}
