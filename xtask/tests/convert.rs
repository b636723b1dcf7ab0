//! `cargo xtask convert` on the TorchScript fixture: the native file holds the same tensors and the
//! provenance of its input. (Embedding parity of TorchScript and converted files is checked in
//! `crates/model/tests/torchscript.rs`.)

use std::path::PathBuf;

use mocoop_model::weights::native::StoredPrecision;
use mocoop_model::weights::{self, LoadOptions, WeightLayout};
use xtask::convert::{ConvertOptions, convert};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn torchscript_converts_to_an_equivalent_native_file() {
    let input = fixtures().join("openclip_quickgelu.torchscript.pt");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("convert-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("converted.safetensors");
    let converted = convert(
        &input,
        &output,
        &ConvertOptions {
            precision: StoredPrecision::F16,
            load: LoadOptions::default(),
        },
    )
    .unwrap();
    assert_eq!(converted.format, "TorchScript archive");
    assert_eq!(converted.layout, WeightLayout::OpenAi);
    assert_eq!(converted.tensors, 62);
    assert_eq!(
        converted.output_bytes,
        std::fs::metadata(&output).unwrap().len()
    );
    let digest = xtask::sha256_file(&input).unwrap();
    assert!(converted.source.contains(&digest), "{}", converted.source);

    let native = weights::load(&output, &LoadOptions::default()).unwrap();
    let reference = weights::load(
        &fixtures().join("openclip_quickgelu.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(native.layout, WeightLayout::Native);
    assert_eq!(native.config, reference.config);
    let names: Vec<&str> = native.state.names().collect();
    assert_eq!(names, reference.state.names().collect::<Vec<_>>());
    for name in names {
        let a = native.state.get(name).unwrap().clone().convert::<f32>();
        let b = reference.state.get(name).unwrap().clone().convert::<f32>();
        assert_eq!(a.shape, b.shape, "{name}");
        assert_eq!(
            a.to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn output_must_be_safetensors() {
    let input = fixtures().join("openclip_quickgelu.safetensors");
    let error = convert(
        &input,
        &PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("out.pt"),
        &ConvertOptions::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains(".safetensors"), "{error}");
}

#[test]
fn an_open_clip_hub_folder_converts_with_its_heads_and_preprocessing() {
    let input = fixtures().join("openclip_hub");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("convert-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("hub.safetensors");
    let converted = convert(&input, &output, &ConvertOptions::default()).unwrap();
    assert_eq!(converted.format, "open_clip hub folder");
    assert_eq!(
        converted.input_digests.len(),
        2,
        "the config and the weights"
    );
    let native = weights::load(&output, &LoadOptions::default()).unwrap();
    let folder = weights::load(&input, &LoadOptions::default()).unwrap();
    assert_eq!(native.layout, WeightLayout::Native);
    // Heads, activation, MLP width and preprocessing all travel in the native file.
    assert_eq!(native.config, folder.config);
    assert!(!native.config.preprocess.is_clip());

    // The same weights bare, with the configuration by flag.
    let bare = dir.join("hub-bare.safetensors");
    std::fs::copy(input.join("open_clip_model.safetensors"), &bare).unwrap();
    let options = ConvertOptions {
        load: LoadOptions {
            open_clip_config: Some(input.join("open_clip_config.json")),
            ..LoadOptions::default()
        },
        ..ConvertOptions::default()
    };
    let converted = convert(&bare, &dir.join("hub-bare-out.safetensors"), &options).unwrap();
    assert_eq!(converted.config, folder.config);
    let error = convert(
        &bare,
        &dir.join("x.safetensors"),
        &ConvertOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("--text-heads"), "{error}");
}

/// The ModifiedResNet fixture's TorchScript archive converts to a native file holding exactly its
/// hub folder's weights (BatchNorm statistics included, `num_batches_tracked` dropped) and its
/// geometry.
#[test]
fn a_resnet_torchscript_archive_converts() {
    let input = fixtures().join("resnet.torchscript.pt");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("convert-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("resnet.safetensors");
    let load = LoadOptions {
        text_heads: Some(1),
        ..LoadOptions::default()
    };
    let options = ConvertOptions {
        precision: StoredPrecision::F16,
        load: load.clone(),
    };
    let converted = convert(&input, &output, &options).unwrap();
    assert_eq!(converted.config.vision.resnet_stages, Some([1, 2, 1, 1]));
    let native = weights::load(&output, &LoadOptions::default()).unwrap();
    let hub = weights::load(&fixtures().join("resnet_hub"), &LoadOptions::default()).unwrap();
    assert_eq!(native.config, hub.config);
    let names: Vec<&str> = native.state.names().collect();
    assert_eq!(names, hub.state.names().collect::<Vec<_>>());
    assert_eq!(converted.tensors, names.len());
    assert!(names.contains(&"visual.layer2.0.downsample.1.running_var"));
    for name in names {
        let a = native.state.get(name).unwrap().clone().convert::<f32>();
        let b = hub.state.get(name).unwrap().clone().convert::<f32>();
        assert_eq!(
            a.to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
    assert!(xtask::convert::describe(&converted.config).starts_with("RN stages [1, 2, 1, 1] 64px"));
}
