//! The CLIP encoders on the WGPU backend against the open_clip and transformers references (every
//! weight format in f32, and f16), and one MoCoOp training step against PyTorch's. These are the
//! model crate's parity and precision checks and the train crate's step check, run with their
//! helpers (`mocoop_test_support::reference`, `mocoop_test_support::train_step`): on WGPU the step runs
//! Burn's generic autodiff, fusion and autotune, the way it runs on CUDA, none of the CPU backend's
//! own operations. They live here for the build's sake: the model crate is
//! built optimised, its tests included, and compiling Burn's WGPU backend into them took about five
//! minutes of the test build on two cores; this package's tests build unoptimised, which takes under
//! one. Mesa's software Vulkan driver (lavapipe) runs them on CI; any GPU runs them elsewhere.

use burn::backend::{Autodiff, Wgpu, wgpu::WgpuDevice};
use mocoop_model::Precision;
use mocoop_test_support::reference::{check_all_formats, precision_errors};
use mocoop_test_support::train_step;

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
