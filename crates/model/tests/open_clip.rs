//! open_clip's configurations: the hub folder fixture (32-wide heads, MLP ratio 2, exact GELU, its
//! own preprocessing), the same weights bare with the configuration given otherwise, and the
//! errors of a configuration that does not fit.
//!
//! Embedding parity of the folder with open_clip is in `parity.rs` (`check_all_formats`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use mocoop_model::Activation;
use mocoop_model::preprocess::{Interpolation, ResizeMode};
use mocoop_model::weights::{self, LoadOptions};
use mocoop_test_support::reference::*;

const WEIGHTS: &str = "open_clip_model.safetensors";

fn hub() -> PathBuf {
    fixtures().join(HUB)
}

/// The hub folder's weights alone in a fresh directory (nothing beside them states the heads).
fn bare_copy(dir: &Path) -> PathBuf {
    let bare = dir.join("bare.safetensors");
    std::fs::copy(hub().join(WEIGHTS), &bare).unwrap();
    bare
}

/// A safetensors tensor, owned.
struct Stored {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn read_tensors(path: &Path) -> BTreeMap<String, Stored> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let stored = Stored {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            };
            (name, stored)
        })
        .collect()
}

fn write_tensors(path: &Path, tensors: &BTreeMap<String, Stored>) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, t)| {
            let view = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes);
            (name.clone(), view.unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// fp16 zeros of `shape`.
fn zeros(shape: Vec<usize>) -> Stored {
    let count: usize = shape.iter().product();
    Stored {
        dtype: safetensors::Dtype::F16,
        shape,
        bytes: vec![0; 2 * count],
    }
}

fn load_error(path: &Path, options: &LoadOptions) -> String {
    weights::load(path, options).unwrap_err().to_string()
}

#[test]
fn a_hub_folder_states_heads_activation_and_preprocessing() {
    let loaded = weights::load(&hub(), &LoadOptions::default()).unwrap();
    let c = &loaded.config;
    // width / 64 would give 1 image head; the configuration's head_width 32 gives 2.
    assert_eq!((c.vision.width, c.vision.heads), (64, 2));
    assert_eq!((c.text.width, c.text.heads), (32, 2));
    assert_eq!((c.vision.image_size, c.embed_dim), (24, 24));
    assert_eq!(c.activation, Activation::Gelu, "no quick_gelu: exact GELU");
    assert_eq!(c.preprocess.mean, [0.45, 0.5, 0.55]);
    assert_eq!(c.preprocess.std, [0.2, 0.25, 0.3]);
    assert_eq!(c.preprocess.interpolation, Interpolation::Bilinear);
    assert_eq!(c.preprocess.resize_mode, ResizeMode::Squash);
}

#[test]
fn a_bare_state_dict_takes_its_configuration_from_a_file_or_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_copy(dir.path());
    // Nothing states the heads, and 64 does not divide the text width.
    let err = load_error(&bare, &LoadOptions::default());
    assert!(
        err.contains("width 32") && err.contains("--vision-heads") && err.contains("--text-heads"),
        "{err}"
    );

    // The hub folder's configuration, given by flag: everything as the folder itself.
    let config = LoadOptions {
        open_clip_config: Some(hub().join("open_clip_config.json")),
        ..LoadOptions::default()
    };
    check_against_reference::<Flex>(&Default::default(), HUB, &bare, &config);

    // Heads and activation by flag: the text tower is right (the images are not: CLIP's
    // preprocessing is not this model's).
    let flags = LoadOptions {
        vision_heads: Some(2),
        text_heads: Some(2),
        activation: Some(Activation::Gelu),
        ..LoadOptions::default()
    };
    let device = Default::default();
    let clip = mocoop_model::Clip::<Flex>::load(&bare, &flags, &device).unwrap();
    assert_eq!(
        (clip.config().vision.heads, clip.config().text.heads),
        (2, 2)
    );
    let (tokens, expected) = first_text(&reference(), HUB);
    let got = rows(clip.encode_text(&[tokens], &device));
    assert!(max_abs_diff(&got, &[expected]) < TOLERANCE);
}

#[test]
fn a_configuration_that_does_not_fit_the_tensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hub");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(hub().join(WEIGHTS), folder.join(WEIGHTS)).unwrap();
    let text = std::fs::read_to_string(hub().join("open_clip_config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["model_cfg"]["vision_cfg"]["width"] = 96.into();
    json["model_cfg"]["vision_cfg"]["mlp_ratio"] = 4.0.into();
    std::fs::write(folder.join("open_clip_config.json"), json.to_string()).unwrap();
    let err = load_error(&folder, &LoadOptions::default());
    assert!(err.contains("does not describe these weights"), "{err}");
    assert!(err.contains("vision_cfg.width is 96 there but 64"), "{err}");
    assert!(
        err.contains("MLP width (vision_cfg.mlp_ratio) is 384 there but 128"),
        "{err}"
    );

    // A named architecture is checked the same way.
    let named = LoadOptions {
        arch: Some("ViT-B-32".into()),
        ..LoadOptions::default()
    };
    let err = load_error(&hub(), &named);
    assert!(
        err.contains("--arch ViT-B-32") && err.contains("embed_dim is 512 there but 24"),
        "{err}"
    );
}

#[test]
fn unknown_architectures_and_mismatched_resnets_are_clear_errors() {
    let unknown = LoadOptions {
        arch: Some("ViT-Q-99".into()),
        ..LoadOptions::default()
    };
    let err = load_error(&hub(), &unknown);
    assert!(
        err.contains("unknown --arch 'ViT-Q-99'") && err.contains("ViT-H-14-quickgelu"),
        "{err}"
    );

    // A ResNet state dict whose tensors do not fit together names the tensor.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rn.safetensors");
    let hub = fixtures().join(RESNET_HUB);
    let mut tensors = read_tensors(&hub.join("open_clip_model.safetensors"));
    let name = "visual.layer2.0.conv2.weight";
    let [out, inp, k, _] = <[usize; 4]>::try_from(tensors[name].shape.clone()).unwrap();
    tensors.insert(name.into(), zeros(vec![out, inp + 1, k, k]));
    write_tensors(&file, &tensors);
    let options = LoadOptions {
        text_heads: Some(1),
        ..LoadOptions::default()
    };
    let err = mocoop_model::Clip::<Flex>::load(&file, &options, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "tensor '{name}' has shape [{out}, {}, {k}, {k}], expected [{out}, {inp}, {k}, {k}]",
            inp + 1
        )),
        "{err}"
    );
    // A ResNet's weights beside a ViT's configuration, and an RN50 name for a smaller ResNet.
    let err = load_error(
        &hub.join("open_clip_model.safetensors"),
        &LoadOptions {
            arch: Some("ViT-B-32".into()),
            ..LoadOptions::default()
        },
    );
    assert!(
        err.contains("the image tower is a ViT there but the ResNet stages [1, 2, 1, 1]"),
        "{err}"
    );
    let err = load_error(
        &file,
        &LoadOptions {
            arch: Some("RN50".into()),
            ..LoadOptions::default()
        },
    );
    assert!(
        err.contains("--arch RN50 does not describe these weights"),
        "{err}"
    );
}
