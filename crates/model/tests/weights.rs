//! Weight loading: formats, configuration inference, bad checkpoints, the native format, and a
//! full-size ViT-B/16 geometry built from random weights.
//!
//! Fixture checkpoints come from `tests/fixtures/make_reference.py` (random-weight open_clip and
//! transformers models).

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use mocoop_model::config::ClipConfig;
use mocoop_model::weights::native::{self, StoredPrecision};
use mocoop_model::weights::{self, LoadOptions, LoadedWeights, StateDict, WeightLayout};
use mocoop_model::{Activation, Clip};
use mocoop_test_support::reference::*;

/// The fixture's tensors, as a plain map to tamper with.
fn fixture_tensors() -> BTreeMap<String, TensorData> {
    let loaded = weights::load(
        &fixtures().join("openclip_quickgelu.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let names: Vec<String> = loaded.state.names().map(String::from).collect();
    names
        .into_iter()
        .map(|n| {
            let data = loaded.state.get(&n).unwrap().clone();
            (n, data)
        })
        .collect()
}

fn build(tensors: BTreeMap<String, TensorData>) -> Result<Clip<Flex>, weights::WeightsError> {
    let config = weights::load(
        &fixtures().join("openclip_quickgelu.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap()
    .config;
    Clip::from_weights(
        LoadedWeights {
            config,
            state: StateDict::new(tensors),
            layout: WeightLayout::OpenAi,
        },
        &Default::default(),
    )
}

#[test]
fn configuration_is_read_off_the_checkpoint() {
    let loaded = weights::load(
        &fixtures().join("openclip_quickgelu.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!((c.embed_dim, c.vision.width, c.vision.layers), (32, 64, 2));
    assert_eq!((c.vision.patch_size, c.vision.image_size), (8, 32));
    assert_eq!(
        (c.text.width, c.text.layers, c.text.context_length),
        (64, 2, 77)
    );
    assert_eq!(c.text.vocab_size, 49408);
    assert_eq!(c.activation, Activation::QuickGelu);
    assert_eq!(loaded.layout, WeightLayout::OpenAi);
    let hf = weights::load(&fixtures().join("hf_clip"), &LoadOptions::default()).unwrap();
    assert_eq!(hf.layout, WeightLayout::HuggingFace);
    assert_eq!(hf.config.vision.heads, 1);
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let mut tensors = fixture_tensors();
    tensors.remove("visual.ln_post.bias");
    let err = build(tensors).unwrap_err().to_string();
    assert!(
        err.contains("visual.ln_post.bias") && err.contains("[64]"),
        "{err}"
    );

    let mut tensors = fixture_tensors();
    tensors.insert("visual.extra".into(), TensorData::new(vec![0f32; 2], [2]));
    let err = build(tensors).unwrap_err().to_string();
    assert!(err.contains("visual.extra"), "{err}");

    let mut tensors = fixture_tensors();
    tensors.insert(
        "visual.proj".into(),
        TensorData::new(vec![0f32; 64 * 16], [64, 16]),
    );
    let err = build(tensors).unwrap_err().to_string();
    assert!(
        err.contains("visual.proj") && err.contains("[64, 16]") && err.contains("[64, 32]"),
        "{err}"
    );
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let temp = |name: &str| dir.path().join(name);
    let truncated = temp("truncated.safetensors");
    let bytes = std::fs::read(fixtures().join("openclip_quickgelu.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = temp("garbage.pt");
    std::fs::write(&garbage, b"definitely not a pickle").unwrap();
    let unknown = temp("weights.onnx");
    std::fs::write(&unknown, b"x").unwrap();
    let hf_alone = temp("hf_alone");
    std::fs::create_dir_all(&hf_alone).unwrap();
    std::fs::copy(
        fixtures().join("hf_clip/model.safetensors"),
        hf_alone.join("model.safetensors"),
    )
    .unwrap();
    let cases = [
        (truncated.clone(), "truncated.safetensors"),
        (garbage.clone(), "garbage.pt"),
        (unknown.clone(), "extension"),
        (hf_alone.join("model.safetensors"), "config.json"),
        (temp("absent.safetensors"), "absent.safetensors"),
    ];
    for (path, needle) in cases {
        let err = weights::load(&path, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{}: {err}", path.display());
    }
}

#[test]
fn native_format_round_trips_with_its_configuration() {
    // The GELU model's activation is not in its state dict; the native file records it.
    let source = fixtures().join("openclip_gelu.safetensors");
    let options = LoadOptions {
        activation: Some(Activation::Gelu),
        ..LoadOptions::default()
    };
    let loaded = weights::load(&source, &options).unwrap();
    let config = loaded.config.clone();
    let dir = tempfile::tempdir().unwrap();
    for (precision, name) in [
        (StoredPrecision::F32, "gelu32"),
        (StoredPrecision::F16, "gelu16"),
    ] {
        let out = dir.path().join(format!("{name}.safetensors"));
        native::save(&loaded.state, &config, "test", precision, &out).unwrap();
        let reloaded = weights::load(&out, &LoadOptions::default()).unwrap();
        assert_eq!(reloaded.layout, WeightLayout::Native);
        assert_eq!(reloaded.config, config);
        // The fixture's weights are fp16-exact, so even the f16 file reproduces the reference.
        let device = Default::default();
        let clip = Clip::<Flex>::from_weights(reloaded, &device).unwrap();
        let (tokens, expected) = first_text(&reference(), "openclip_gelu");
        let got = rows(clip.encode_text(&[tokens], &device));
        assert!(max_abs_diff(&got, &[expected]) < 1e-4);
    }
}

#[test]
fn full_size_vit_b16_geometry_runs() {
    // Random weights of the real ViT-B/16 shapes, through the same loading code as a checkpoint.
    let config = ClipConfig::vit_b_16();
    let device = Default::default();
    let clip = Clip::<Flex>::from_weights(
        LoadedWeights {
            config: config.clone(),
            state: StateDict::random(7),
            layout: WeightLayout::Native,
        },
        &device,
    )
    .unwrap();
    let image = Tensor::<Flex, 4>::random(
        [1, 3, 224, 224],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let image_embeds = rows(clip.encode_image(image));
    let mut tokens = vec![0u32; 77];
    tokens[..4].copy_from_slice(&[49406, 320, 1929, 49407]);
    let text_embeds = rows(clip.encode_text(&[tokens], &device));
    for embeds in [image_embeds, text_embeds] {
        assert_eq!((embeds.len(), embeds[0].len()), (1, 512));
        let norm: f32 = embeds[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        assert!(embeds[0].iter().all(|x| x.is_finite()));
    }
    assert_eq!(clip.config(), &config);
    // The preset's count from its fields (checked against OpenAI's) is what the model holds.
    assert_eq!(clip.num_params(), crate::presets::parameter_count(&config));
}
