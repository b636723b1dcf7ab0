//! Checkpoint round trip: a trained model (prompts, bias, router and image LayerNorms all moved
//! away from their initial values) saved to a run directory and loaded back onto a fresh CLIP gives
//! the same logits as the in-memory model.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::SgdConfig;
use burn::tensor::{Int, Tensor, TensorData};

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::preprocess::{batch_tensor, load_rgb, preprocess};
use mocoop_model::prompt::MixtureConfig;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_test_support::reference::fixtures;
use mocoop_test_support::train_step::fixture_config;
use mocoop_train::checkpoint::{read, write};
use mocoop_train::config::{LossConfig, Method};
use mocoop_train::model::visual_ln_params;
use mocoop_train::{ClassSetup, MocoopModel, PromptLearner, Recipe, TrainedRun, run};

type B = Autodiff<Flex>;

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn saved_run_reloads_to_identical_logits() {
    let _serial = mocoop_test_support::serial_autodiff();
    let device = Default::default();
    let tokenizer = ClipTokenizer::embedded();
    let weights = fixtures().join("openclip_quickgelu.safetensors");
    let clip = Clip::<B>::load(&weights, &LoadOptions::default(), &device).unwrap();
    let groups = TemplateGroups::new(
        "test",
        vec![
            vec!["a photo of a {}.".into(), "a sketch of a {}.".into()],
            vec!["a {} under a yellow lamp.".into()],
            vec!["a small {}.".into()],
        ],
    )
    .unwrap();
    let classes = ClassSetup::all(vec!["cat".into(), "dog".into(), "red square".into()]);
    let mixture = MixtureConfig::mocoop(&groups, 2, 3);
    let mut model = MocoopModel::new(
        clip,
        tokenizer,
        mixture.clone(),
        groups.groups(),
        &classes,
        LossConfig::mocoop(),
        true,
        0.0,
        &device,
    )
    .unwrap();
    let ln_before: Vec<Vec<f32>> = visual_ln_params(&model.clip)
        .iter()
        .map(|(_, p)| values(p.val().inner()))
        .collect();

    // A few large steps move every trainable tensor.
    let images = ["img0.png", "img1.png", "img2.png", "img3.png"];
    let pixels: Vec<Vec<f32>> = images
        .iter()
        .map(|n| preprocess(&load_rgb(&fixtures().join("images").join(n)).unwrap(), 32))
        .collect();
    let batch = || ImageBatch {
        images: batch_tensor::<B>(&pixels, 32, &device),
        labels: Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 1], [4]), &device),
        indices: (0..4).collect(),
        share: 1.0,
    };
    let mut optim = SgdConfig::new().init::<B, MocoopModel<B>>();
    for _ in 0..3 {
        let (_, grads) = model.train_step(batch());
        model = model.apply_grads(&mut optim, 0.5, grads.unwrap());
    }
    let ln_after: Vec<Vec<f32>> = visual_ln_params(&model.clip)
        .iter()
        .map(|(_, p)| values(p.val().inner()))
        .collect();
    assert_ne!(
        ln_before, ln_after,
        "the image LayerNorms must have trained"
    );

    // Save as a run.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("checkpoint-round-trip");
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = fixture_config(Method::Mocoop, mixture, LossConfig::mocoop(), true);
    config.data.root = dir.clone();
    // The published recipe as it stands (batch size 32, 50 epochs).
    config.optim = Recipe::for_run(Method::Mocoop, "test").optim(32, 50);
    run::create(&dir, &config, false).unwrap();
    let tensors = PromptLearner::tensors(&model);
    let metadata = [("method".to_string(), "mocoop".to_string())].into();
    write(&run::checkpoint_path(&dir), &tensors, &[], metadata).unwrap();
    let saved = read(&run::checkpoint_path(&dir)).unwrap();
    assert_eq!(saved.tensors.len(), 3 + 1 + 2 + 8);
    let size = std::fs::metadata(run::checkpoint_path(&dir)).unwrap().len();
    assert!(size < 32 * 1024, "{size} bytes");

    // Reload on the inference backend with a fresh CLIP.
    let fresh = Clip::<Flex>::load(&weights, &LoadOptions::default(), &device).unwrap();
    let loaded = TrainedRun::load(&dir, fresh, tokenizer, Some(Method::Mocoop), &device).unwrap();
    let memory = model.valid();
    let images = batch_tensor::<Flex>(&pixels, 32, &device);
    let f_loaded = loaded.clip().encode_image(images.clone());
    let f_memory = memory
        .clip
        .encode_image(batch_tensor::<Flex>(&pixels, 32, &device));
    assert_eq!(values(f_loaded.clone()), values(f_memory.clone()));
    let c_loaded = loaded
        .classifier(tokenizer, &classes.train, "test", &device)
        .unwrap();
    let prompts = memory
        .mixture
        .class_prompts(&memory.clip.text, tokenizer, &classes.train, &device)
        .unwrap();
    let c_memory =
        memory
            .mixture
            .classifier(&memory.clip.text, &prompts, memory.clip.logit_scale(), 1024);
    assert_eq!(
        values(c_loaded.predict(images).logits),
        values(c_memory.logits(f_memory))
    );

    // The same checkpoint under a CoOp configuration is refused.
    let err = TrainedRun::load(
        &dir,
        Clip::<Flex>::load(&weights, &LoadOptions::default(), &device).unwrap(),
        tokenizer,
        Some(Method::Coop),
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a coop run"), "{err}");
}

#[test]
fn damaged_checkpoints_are_detected() {
    let _serial = mocoop_test_support::serial_autodiff();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let tensors = [(
        "ctx.0".to_string(),
        TensorData::new(vec![0.5f32, -1.0, 2.0, 3.5], [2, 2]),
    )];
    let blobs = [("state.optimizer".to_string(), vec![1u8, 2, 3])];
    let metadata = [("method".to_string(), "mocoop".to_string())].into();
    write(&path, &tensors, &blobs, metadata).unwrap();
    let good = std::fs::read(&path).unwrap();
    let read_back = read(&path).unwrap();
    assert_eq!(read_back.blobs["state.optimizer"], vec![1, 2, 3]);
    assert_eq!(
        read_back.tensors["ctx.0"].to_vec::<f32>().unwrap(),
        vec![0.5, -1.0, 2.0, 3.5]
    );

    // One flipped bit in the data, or in a tensor's dtype/metadata: the digest no longer matches.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    let mut renamed = good.clone();
    let at = renamed
        .windows(8)
        .position(|w| w == b"\"mocoop\"")
        .expect("the method in the header");
    renamed[at + 6] = b'f';
    std::fs::write(&path, &renamed).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");

    // Truncated anywhere: reported as damaged, never a panic.
    for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("damaged"), "cut at {cut}: {err}");
    }
}

#[test]
fn identical_content_gives_identical_bytes() {
    let _serial = mocoop_test_support::serial_autodiff();
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        (
            "ctx.0".to_string(),
            TensorData::new(vec![0.5f32, -1.0], [1, 2]),
        ),
        (
            "router.bias".to_string(),
            TensorData::new(vec![3.0f32], [1]),
        ),
        (
            "text_bias".to_string(),
            TensorData::new(vec![7.0f32; 4], [2, 2]),
        ),
    ];
    let blobs = vec![
        ("state.optimizer".to_string(), vec![1u8, 2, 3]),
        ("state.loss".to_string(), vec![9u8]),
    ];
    let pairs: Vec<(String, String)> = (0..16)
        .map(|i| (format!("key{i:02}"), format!("value {i}")))
        .collect();
    // Two maps of the same pairs, filled in opposite orders (each with its own random hasher).
    let forward: HashMap<String, String> = pairs.iter().cloned().collect();
    let backward: HashMap<String, String> = pairs.iter().rev().cloned().collect();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write(&a, &tensors, &blobs, forward).unwrap();
    let reversed: Vec<_> = tensors.iter().rev().cloned().collect();
    write(&b, &reversed, &blobs, backward).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());

    // A standard safetensors file: the safetensors crate reads it, and writing its content with
    // `safetensors::serialize` (how earlier versions wrote checkpoints) lays out the same bytes
    // but for the order of the metadata keys, which `read` accepts.
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    for (key, value) in &pairs {
        assert_eq!(metadata.get(key), Some(value));
    }
    let old = safetensors::serialize(file.tensors(), Some(metadata)).unwrap();
    assert_eq!(old.len(), bytes.len());
    let data_start = bytes.len() - (4 * (2 + 1 + 4) + 3 + 1);
    assert_eq!(old[data_start..], bytes[data_start..]);
    let old_path = dir.path().join("old");
    std::fs::write(&old_path, &old).unwrap();
    let (new, old) = (read(&a).unwrap(), read(&old_path).unwrap());
    assert_eq!(new.metadata, old.metadata);
    assert_eq!(new.blobs, old.blobs);
    assert_eq!(
        new.tensors.keys().collect::<Vec<_>>(),
        ["ctx.0", "router.bias", "text_bias"]
    );
    for (name, data) in &new.tensors {
        assert_eq!(data, &old.tensors[name], "{name}");
    }
}
