//! The LN-tuned image side of a training step, run in parts with one autodiff graph each
//! (`ImageParts`), against the same batch run whole: the LayerNorms' gradients agree to float
//! rounding, and two runs of the parts agree bit for bit (a resumed run repeats an uninterrupted
//! one). `reference_step.rs` checks a whole step, parts included on a multi-core machine, against
//! PyTorch.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use mocoop_model::Clip;
use mocoop_model::clip::l2_normalize;
use mocoop_model::weights::LoadOptions;
use mocoop_train::image_parts::ImageParts;
use mocoop_train::model::{freeze_clip, visual_ln_params};

type B = Autodiff<Flex>;

/// The open_clip fixture model (`tests/fixtures/make_reference.py`), image LayerNorms trained
/// when `ln_tuning`.
fn clip(ln_tuning: bool) -> Clip<B> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/openclip_quickgelu.safetensors");
    let clip = Clip::load(&file, &LoadOptions::default(), &Default::default()).expect("loads");
    freeze_clip(clip, ln_tuning)
}

/// A deterministic batch of `n` images of the encoder's size.
fn images(clip: &Clip<B>, n: usize) -> Tensor<B, 4> {
    let s = clip.vision.image_size();
    let values: Vec<f32> = (0..n * 3 * s * s)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    Tensor::from_data(TensorData::new(values, [n, 3, s, s]), &Default::default())
}

/// A loss whose gradient differs per image and feature.
fn loss(features: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, d] = features.dims();
    let weights: Vec<f32> = (0..n * d).map(|i| ((i as f32) * 0.11).cos()).collect();
    let weights = Tensor::from_data(TensorData::new(weights, [n, d]), &features.device());
    (features.powi_scalar(2) * weights).sum()
}

/// Each image LayerNorm parameter's gradient.
fn ln_grads(clip: &Clip<B>, grads: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    visual_ln_params(clip)
        .into_iter()
        .map(|(name, p)| {
            let g = grads
                .get::<Flex, 1>(p.id)
                .unwrap_or_else(|| panic!("{name} has a gradient"));
            (name, g.into_data().to_vec::<f32>().unwrap())
        })
        .collect()
}

/// The gradients of the images' loss, the image side run in `count` parts.
fn in_parts(clip: &Clip<B>, images: &Tensor<B, 4>, count: usize) -> Vec<(String, Vec<f32>)> {
    let parts = ImageParts::encode(&clip.vision, images, count).expect("the batch is split");
    let grads = loss(parts.features()).backward();
    ln_grads(clip, &parts.backward(grads, &clip.vision))
}

#[test]
fn parts_give_the_whole_batch_gradients_and_repeat_bit_for_bit() {
    let _serial = mocoop_test_support::serial_autodiff();
    let clip = clip(true);
    let images = images(&clip, 5);
    let whole = {
        let grads = loss(l2_normalize(clip.vision.forward(images.clone()))).backward();
        ln_grads(&clip, &GradientsParams::from_grads(grads, &clip.vision))
    };
    // Three parts of 2, 2 and 1 images.
    let parts = in_parts(&clip, &images, 3);
    assert_eq!(whole.len(), parts.len());
    for ((name, w), (_, p)) in whole.iter().zip(&parts) {
        let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = w
            .iter()
            .zip(p)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5 * scale,
            "{name}: parts differ from the whole batch by {diff}"
        );
        assert!(w.iter().any(|v| *v != 0.0), "{name}: a gradient flows");
    }
    assert_eq!(
        parts,
        in_parts(&clip, &images, 3),
        "two runs in parts differ"
    );
}

#[test]
fn the_batch_runs_whole_in_one_part_or_through_a_frozen_encoder() {
    let _serial = mocoop_test_support::serial_autodiff();
    let tuned = clip(true);
    let images = images(&tuned, 4);
    assert!(ImageParts::encode(&tuned.vision, &images, 1).is_none());
    let frozen = clip(false);
    assert!(ImageParts::encode(&frozen.vision, &images, 3).is_none());
}
