//! CLIP forward parity with open_clip and transformers, on the CPU (Flex) backend. The same checks
//! on WGPU run in the CLI package's tests (`crates/cli/tests/wgpu.rs` says why).
//!
//! Reference values come from `tests/fixtures/make_reference.py` (random-weight open_clip QuickGELU
//! and GELU models and a transformers `CLIPModel`, fp16-exact weights, fp32 compute). Embeddings must
//! agree to 1e-4 absolute, as the issue requires.

use burn::backend::Flex;
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, clip::l2_normalize};
use mocoop_test_support::reference::*;

#[test]
fn matches_reference_on_cpu() {
    check_all_formats::<Flex>(&Default::default());
}

#[test]
fn gelu_model_needs_its_activation() {
    // The GELU model run with QuickGELU must *not* match: the activation really is used.
    let dir = fixtures();
    let device = Default::default();
    let clip = Clip::<Flex>::load(
        &dir.join("openclip_gelu.safetensors"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let (tokens, expected) = first_text(&reference(), "openclip_gelu");
    let got = rows(clip.encode_text(&[tokens], &device));
    assert!(max_abs_diff(&got, &[expected]) > 1e-3);
}

#[test]
fn cutting_at_the_last_eot_equals_the_full_context() {
    let device = Default::default();
    let clip = load_quickgelu::<Flex>(&device);
    let tokens = token_rows(&reference()["tokenizer"]["ids"]);
    let cut = rows(l2_normalize(clip.text.forward_tokens(&tokens, &device)));
    let eot = mocoop_model::clip::eot_positions(&tokens);
    assert!(eot.contains(&76) && eot.iter().any(|&p| p < 10));
    let ids: Vec<i64> = tokens.iter().flatten().map(|&t| t as i64).collect();
    let ids = burn::tensor::Tensor::<Flex, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids, [tokens.len(), 77]),
        &device,
    );
    let full = rows(l2_normalize(
        clip.text.forward_embedded(clip.text.embed(ids), &eot),
    ));
    let err = max_abs_diff(&cut, &full);
    assert!(err < 1e-5, "cut vs full context differ by {err}");

    // A batch of short texts only runs up to its own longest EOT and still matches.
    let short: Vec<Vec<u32>> = tokens.iter().filter(|r| r[12] == 0).cloned().collect();
    assert!(short.len() >= 2);
    let short_cut = rows(l2_normalize(clip.text.forward_tokens(&short, &device)));
    let short_full: Vec<Vec<f32>> = tokens
        .iter()
        .zip(&full)
        .filter(|(r, _)| r[12] == 0)
        .map(|(_, f)| f.clone())
        .collect();
    assert!(max_abs_diff(&short_cut, &short_full) < 1e-5);
}
