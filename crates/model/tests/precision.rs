//! Half-precision encoders (f16, bf16) against the f32 open_clip reference.
//!
//! The reference embeddings are open_clip's, computed in f32 by `tests/fixtures/make_reference.py`
//! (regenerate as described there). In half precision our embeddings must stay within the rounding
//! of the type (a few units of its epsilon after a dozen layers), and must differ from our own f32
//! embeddings: the work really ran in half precision. f16 on WGPU is checked in the CLI package's
//! tests (`crates/cli/tests/wgpu.rs` says why).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use mocoop_model::Precision;
use mocoop_test_support::reference::*;

#[test]
fn f16_embeddings_match_the_reference_to_half_precision() {
    let (to_reference, to_full) = precision_errors::<Flex>(Precision::F16, &Default::default());
    assert!(to_reference < 2e-3, "f16 differs by {to_reference}");
    assert!(to_full > 1e-6, "f16 gave the f32 result: no half compute");
}

#[test]
fn bf16_embeddings_match_the_reference_to_bfloat_precision() {
    let (to_reference, to_full) = precision_errors::<Flex>(Precision::Bf16, &Default::default());
    assert!(to_reference < 2e-2, "bf16 differs by {to_reference}");
    assert!(to_full > 1e-5, "bf16 gave the f32 result: no half compute");
}

/// Counts parameters by float type.
#[derive(Default)]
struct DtypeCount {
    f32: usize,
    half: usize,
}

impl<B: Backend> ModuleVisitor<B> for DtypeCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match param.val().dtype() {
            DType::F32 => self.f32 += 1,
            DType::F16 | DType::BF16 => self.half += 1,
            other => panic!("unexpected parameter type {other:?}"),
        }
    }
}

#[test]
fn only_layer_norms_token_embedding_and_temperature_stay_f32() {
    let clip = load_quickgelu::<Flex>(&Default::default()).with_precision(Precision::Bf16);
    let config = clip.config().clone();
    let mut count = DtypeCount::default();
    clip.visit(&mut count);
    // ln_pre, ln_post, ln_final and two per block, each with weight and bias; plus the token
    // embedding and logit_scale.
    let norms = 3 + 2 * (config.vision.layers + config.text.layers);
    assert_eq!(count.f32, 2 * norms + 2);
    assert!(count.half > count.f32);
}

#[test]
fn layer_norm_gradients_arrive_in_f32() {
    // Visual LN tuning trains f32 master copies even when the encoder computes in f16.
    type B = Autodiff<Flex>;
    let device = Default::default();
    let clip = load_quickgelu::<B>(&device)
        .with_precision(Precision::F16)
        .no_grad();
    let gamma = clip.vision.transformer().expect("a ViT").blocks[0]
        .ln_1
        .gamma
        .val()
        .require_grad();
    let mut clip = clip;
    clip.vision.transformer_mut().expect("a ViT").blocks[0]
        .ln_1
        .gamma = Param::from_tensor(gamma.clone());
    let size = clip.config().vision.image_size;
    let images = Tensor::<B, 4>::ones([2, 3, size, size], &device) * 0.5;
    let loss = clip.encode_image(images).sum();
    let grads = loss.backward();
    let grad = gamma.grad(&grads).expect("LayerNorm gradient");
    assert_eq!(grad.dtype(), DType::F32);
    let values = grad.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|v| *v != 0.0));
}
