//! One MoCoOp, CoOp, CoCoOp, KgCoOp, ProGrad, LASP, MaPLe, IVLP, VPT and PromptSRC training step on the CPU against the PyTorch reference in
//! `tests/fixtures/train_step.json` (written by `tests/fixtures/make_reference.py`): logits, router
//! logits, gates, every loss term, the gradients of the contexts, router, text bias and image
//! LayerNorms, and the parameters after two SGD steps (momentum, weight decay, global-norm
//! clipping, LayerNorms at 0.1× lr). The checks are in `mocoop_test_support::train_step`.
//!
//! The same steps with the encoders in f16 (with dynamic loss scaling) and bf16 must stay within
//! the rounding of those types of the f32 reference, with the trainable tensors and their
//! gradients in f32 (master copies).

use burn::backend::{Autodiff, Flex};
use burn::optim::SgdConfig;

use mocoop_model::Precision;
use mocoop_train::MocoopModel;
use mocoop_train::config::Method;
use mocoop_train::loss_scale::LossScale;

use mocoop_test_support::deep_step::run_deep_case;
use mocoop_test_support::train_step::{IN_RANGE, named_params, run_case, setup};

type B = Autodiff<Flex>;

#[test]
fn mocoop_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("mocoop", Precision::F32, &Default::default());
}

#[test]
fn coop_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("coop", Precision::F32, &Default::default());
}

#[test]
fn kgcoop_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("kgcoop", Precision::F32, &Default::default());
}

/// The fixture's ProGrad case is one whose cross-entropy gradient points against the
/// distillation's, so the projected gradient is what is compared (the script asserts it).
#[test]
fn prograd_step_with_its_projection_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("prograd", Precision::F32, &Default::default());
}

/// And one where the two agree: the gradient is the cross-entropy's, untouched.
#[test]
fn prograd_step_without_projection_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("prograd_kept", Precision::F32, &Default::default());
}

/// LASP: CoOp's prompt with the text bias and the image LayerNorms, its text loss against every
/// template over all class names (base and new).
#[test]
fn lasp_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("lasp", Precision::F32, &Default::default());
}

#[test]
fn cocoop_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    mocoop_test_support::cocoop_step::run_cocoop_case::<B>(&Default::default());
}

#[test]
fn mocoop_step_in_f16_with_loss_scaling_stays_near_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("mocoop", Precision::F16, &Default::default());
}

#[test]
fn mocoop_step_in_bf16_stays_near_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("mocoop", Precision::Bf16, &Default::default());
}

#[test]
fn coop_step_in_bf16_stays_near_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_case::<B>("coop", Precision::Bf16, &Default::default());
}

#[test]
fn an_overflowing_f16_step_is_skipped_and_the_loss_scale_lowered() {
    let _serial = mocoop_test_support::serial_autodiff();
    let (mut model, _, batch) = setup::<B>("mocoop", Precision::F16, &Default::default());
    // A scale that overflows f32: the scaled loss and its gradients are infinite.
    let huge = LossScale {
        scale: 2f32.powi(127),
        ..LossScale::default()
    };
    model.state.loss_scale = Some(huge);
    let before = named_params(&model);
    let mut optim = SgdConfig::new().init::<B, MocoopModel<B>>();
    let (output, grads) = model.train_step(batch());
    assert!(
        output.value("loss").unwrap().is_finite(),
        "the loss itself is finite"
    );
    let mut model = model.apply_grads(
        &mut optim,
        0.1,
        grads.expect("a finite loss gives gradients"),
    );
    let after = named_params(&model);
    for ((name, _, a, _), (_, _, b, _)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{name} changed in a skipped step");
    }
    let state = model.state.loss_scale.unwrap();
    assert_eq!((state.scale, state.skipped), (2f32.powi(126), 1));
    // Once the scale is back in range, the next step trains.
    model.state.loss_scale = Some(IN_RANGE);
    let (_, grads) = model.train_step(batch());
    let model = model.apply_grads(&mut optim, 0.1, grads.unwrap());
    assert_ne!(
        named_params(&model)[0].2,
        before[0].2,
        "a finite step updates"
    );
    assert_eq!(model.state.loss_scale.unwrap().good_steps, 1);
    assert_eq!(
        model.state.steps, 2,
        "both steps are counted, the skipped one too"
    );
}

#[test]
fn maple_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>("maple", Method::Maple, Precision::F32, &Default::default());
}

#[test]
fn ivlp_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>("ivlp", Method::Ivlp, Precision::F32, &Default::default());
}

#[test]
fn vpt_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>("vpt", Method::Vpt, Precision::F32, &Default::default());
}

/// PromptSRC: IVLP's prompts, the cross-entropy and its three self-regulating terms against
/// frozen CLIP (the template ensemble's text features, the image features, the zero-shot
/// logits), each checked on its own and in the weighted loss.
#[test]
fn promptsrc_step_matches_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>(
        "promptsrc",
        Method::Promptsrc,
        Precision::F32,
        &Default::default(),
    );
}

#[test]
fn maple_step_in_f16_with_loss_scaling_stays_near_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>("maple", Method::Maple, Precision::F16, &Default::default());
}

#[test]
fn ivlp_step_in_bf16_stays_near_pytorch() {
    let _serial = mocoop_test_support::serial_autodiff();
    run_deep_case::<B>("ivlp", Method::Ivlp, Precision::Bf16, &Default::default());
}
