//! `Clip::to_state_dict` is the inverse of loading: export → save → load gives the same model.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use mocoop_model::weights::native::{StoredPrecision, save};
use mocoop_model::weights::{LoadOptions, LoadedWeights, WeightLayout};
use mocoop_model::{Activation, Clip, ClipConfig};

type B = Flex;

/// The tiny preset with exact GELU: an activation the tensors cannot tell, so the round trip
/// through the native file must carry it (as it must the heads, which are not the 64-wide rule's).
fn tiny_config() -> ClipConfig {
    ClipConfig::tiny().with_activation(Activation::Gelu)
}

fn random_clip<B: burn::tensor::backend::Backend>(seed: u64, device: &B::Device) -> Clip<B> {
    tiny_config().init(seed, device).unwrap()
}

fn embeddings<B: burn::tensor::backend::Backend>(
    clip: &Clip<B>,
    device: &B::Device,
) -> (Vec<f32>, Vec<f32>) {
    let pixels: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [2, 3, 32, 32]), device);
    let tokens = vec![
        [vec![49406, 5, 17, 49407], vec![0; 73]].concat(),
        [vec![3, 250, 299], vec![0; 74]].concat(),
    ];
    let image = clip
        .encode_image(images)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let text = clip
        .encode_text(&tokens, device)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    (image, text)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn export_save_load_round_trip() {
    let device = Default::default();
    let clip = random_clip::<B>(3, &device);
    let state = clip.to_state_dict();
    // Every tensor the loader needs, in PyTorch layout: rebuilding consumes all of them.
    assert_eq!(
        state.shape("visual.transformer.resblocks.0.attn.in_proj_weight"),
        Some(&[96, 32][..])
    );
    assert_eq!(
        state.shape("transformer.resblocks.0.mlp.c_fc.weight"),
        Some(&[128, 32][..])
    );
    assert_eq!(
        state.shape("token_embedding.weight"),
        Some(&[49408, 32][..])
    );
    let rebuilt = Clip::<B>::from_weights(
        LoadedWeights {
            config: tiny_config(),
            state,
            layout: WeightLayout::Native,
        },
        &device,
    )
    .unwrap();
    let (image_a, text_a) = embeddings(&clip, &device);
    let (image_b, text_b) = embeddings(&rebuilt, &device);
    assert_eq!(max_diff(&image_a, &image_b), 0.0);
    assert_eq!(max_diff(&text_a, &text_b), 0.0);

    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    for (precision, tolerance) in [(StoredPrecision::F32, 1e-6), (StoredPrecision::F16, 2e-2)] {
        let path = dir.join(format!("tiny-{precision:?}.safetensors"));
        save(
            &clip.to_state_dict(),
            clip.config(),
            "round trip test",
            precision,
            &path,
        )
        .unwrap();
        let loaded = Clip::<B>::load(&path, &LoadOptions::default(), &device).unwrap();
        assert_eq!(loaded.config(), clip.config());
        assert!((loaded.logit_scale() - clip.logit_scale()).abs() < 1e-2);
        let (image_c, text_c) = embeddings(&loaded, &device);
        assert!(
            max_diff(&image_a, &image_c) <= tolerance,
            "{precision:?} image"
        );
        assert!(
            max_diff(&text_a, &text_c) <= tolerance,
            "{precision:?} text"
        );
    }
}

#[test]
fn logit_scale_is_trainable_and_can_be_clamped() {
    type A = Autodiff<Flex>;
    let device = Default::default();
    let clip = random_clip::<A>(1, &device).map_logit_scale(|t| t.mul_scalar(2.0));
    assert!((clip.logit_scale() - 2.0 * 100f32.ln()).abs() < 1e-5);
    let loss = clip.logit_scale_tensor().exp().sum();
    let grads = loss.backward();
    let grad = clip
        .logit_scale_tensor()
        .grad(&grads)
        .expect("logit_scale has a gradient");
    let g = grad.into_data().to_vec::<f32>().unwrap()[0];
    assert!((g - clip.logit_scale().exp()).abs() / g < 1e-4);
    let clamped = clip.map_logit_scale(|t| t.clamp_max(100f32.ln()));
    assert!((clamped.logit_scale() - 100f32.ln()).abs() < 1e-6);
    assert!(clamped.logit_scale_tensor().is_require_grad());
}
