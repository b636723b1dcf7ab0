//! The CLIP encoders on the WGPU backend against the open_clip and transformers references (every
//! weight format in f32, and f16), and one MoCoOp and one MaPLe training step against PyTorch's.
//! These are the model crate's parity and precision checks and the train crate's step checks, run
//! with their helpers (`mocoop_test_support::reference`, `train_step`, `deep_step`): on WGPU a step runs
//! Burn's generic autodiff, fusion and autotune, the way it runs on CUDA, none of the CPU backend's
//! own operations. They live here for the build's sake: the model crate is
//! built optimised, its tests included, and compiling Burn's WGPU backend into them took about five
//! minutes of the test build on two cores; this package's tests build unoptimised, which takes under
//! one. Mesa's software Vulkan driver (lavapipe) runs them on CI; any GPU runs them elsewhere.

use burn::backend::{Autodiff, Wgpu, wgpu::WgpuDevice};
use mocoop_model::Precision;
use mocoop_test_support::deep_step::run_deep_case;
use mocoop_test_support::reference::{check_all_formats, precision_errors};
use mocoop_test_support::train_step;
use mocoop_train::Method;

#[test]
fn encoders_match_the_references_on_wgpu() {
    check_all_formats::<Wgpu>(&WgpuDevice::Cpu);
}

#[test]
fn f16_on_wgpu_matches_the_reference_to_half_precision() {
    let (to_reference, to_full) = precision_errors::<Wgpu>(Precision::F16, &WgpuDevice::Cpu);
    assert!(to_reference < 2e-3, "f16 on WGPU differs by {to_reference}");
    assert!(
        to_full > 1e-6,
        "f16 on WGPU gave the f32 result: no half compute"
    );
}

/// Not in the default run: on lavapipe it takes about 6 minutes from a cold autotune cache (3 with
/// a warm one, `target/autotune/`), which CI's time budget does not have room for. Run it with
/// `scripts/test.sh -- --ignored wgpu::`.
#[test]
#[ignore = "about 6 minutes on lavapipe; scripts/test.sh -- --ignored wgpu::"]
fn mocoop_step_on_wgpu_matches_pytorch() {
    train_step::run_case::<Autodiff<Wgpu>>("mocoop", Precision::F32, &WgpuDevice::Cpu);
}

/// MaPLe's step (deep language tokens, the visual tokens coupled to them, both towers prompted)
/// on Burn's generic autodiff, fusion and autotune: the reference step's logits, loss, gradients
/// and tensors after two steps to 1e-4. Not in the default run: about 4 minutes on lavapipe on the
/// 2-core machine (cold autotune cache, other builds running); `scripts/test.sh -- --ignored
/// wgpu::` runs it.
#[test]
#[ignore = "about 4 minutes on lavapipe; scripts/test.sh -- --ignored wgpu::"]
fn maple_step_on_wgpu_matches_pytorch() {
    run_deep_case::<Autodiff<Wgpu>>("maple", Method::Maple, Precision::F32, &WgpuDevice::Cpu);
}
