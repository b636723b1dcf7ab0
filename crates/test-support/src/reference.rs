//! Shared access to the reference fixtures in `tests/fixtures/` at the repository root.
//!
//! The fixtures are produced by `tests/fixtures/make_reference.py` from random-weight open_clip and
//! transformers models (regenerate with `tests/fixtures/setup_reference_env.sh` then
//! `.venv-ref/bin/python tests/fixtures/make_reference.py`); CI only reads them. Used by the model
//! package's tests on the CPU and by the CLI package's tests on WGPU.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use mocoop_model::config::Activation;
use mocoop_model::preprocess::{batch_tensor, load_rgb};
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, Precision};
use serde_json::Value;

/// Largest absolute difference allowed between our embeddings and the reference's.
pub const TOLERANCE: f32 = 1e-4;

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// `reference.json`, parsed.
pub fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json"))
        .expect("tests/fixtures/reference.json is missing: see tests/fixtures/make_reference.py");
    serde_json::from_str(&text).expect("reference.json is valid JSON")
}

/// A JSON array of arrays of numbers as rows of f32.
pub fn matrix(value: &Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(vector)
        .collect()
}

/// A JSON array of numbers as f32.
pub fn vector(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// A JSON array of arrays of integers as token rows.
pub fn token_rows(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_u64().expect("token id") as u32)
                .collect()
        })
        .collect()
}

/// The reference tokens of the first tokenizer string and that string's row in `model`'s text
/// embeddings: one text to check a model against.
pub fn first_text(reference: &Value, model: &str) -> (Vec<u32>, Vec<f32>) {
    let tokens = token_rows(&reference["tokenizer"]["ids"])[0].clone();
    let first = &reference["tokenizer"]["strings"][0];
    let index = reference["texts"]
        .as_array()
        .expect("array")
        .iter()
        .position(|t| t == first)
        .expect("the first tokenizer string is among the embedded texts");
    let embeds = matrix(&reference["models"][model]["text_embeds"]);
    (tokens, embeds[index].clone())
}

/// A 2-D tensor as rows.
pub fn rows<B: Backend>(tensor: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [n, d] = tensor.dims();
    let flat = tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    (0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect()
}

/// Largest absolute elementwise difference; panics on a shape mismatch.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row width");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Embeds the reference images and texts with `clip`: `(image_embeds, text_embeds)`.
pub fn embed_reference_inputs<B: Backend>(
    clip: &Clip<B>,
    reference: &Value,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    embed_inputs(clip, reference, &reference["images"], device)
}

/// [`embed_reference_inputs`] with the images named in `image_names`, each preprocessed with the
/// transform the model's checkpoint states.
fn embed_inputs<B: Backend>(
    clip: &Clip<B>,
    reference: &Value,
    image_names: &Value,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let config = clip.config();
    let size = config.vision.image_size;
    let images: Vec<Vec<f32>> = image_names
        .as_array()
        .unwrap()
        .iter()
        .map(|name| {
            let path = fixtures().join("images").join(name.as_str().unwrap());
            config
                .preprocess
                .apply(&load_rgb(&path).unwrap(), size as u32)
        })
        .collect();
    let image_embeds = clip.encode_image(batch_tensor::<B>(&images, size, device));

    let texts = reference["texts"].as_array().unwrap();
    let strings = reference["tokenizer"]["strings"].as_array().unwrap();
    let all_ids = token_rows(&reference["tokenizer"]["ids"]);
    let tokens: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| all_ids[strings.iter().position(|s| s == t).unwrap()].clone())
        .collect();
    (image_embeds, clip.encode_text(&tokens, device))
}

/// Loads one model file and checks its image embeddings, text embeddings, logits and
/// `logit_scale` against `reference.json`'s `model` entry, to [`TOLERANCE`]; returns the model.
pub fn check_against_reference<B: Backend>(
    device: &B::Device,
    model: &str,
    file: &Path,
    options: &LoadOptions,
) -> Clip<B> {
    let reference = reference();
    let expected = &reference["models"][model];
    let clip = Clip::<B>::load(file, options, device)
        .unwrap_or_else(|e| panic!("loading {}: {e}", file.display()));
    // A model may have its own images (the open_clip hub model: non-square ones, which its
    // squashing transform treats otherwise than CLIP's crop).
    let image_names = expected.get("images").unwrap_or(&reference["images"]);
    let (image_embeds, text_embeds) = embed_inputs(&clip, &reference, image_names, device);

    let image_rows = rows(image_embeds.clone());
    let text_rows = rows(text_embeds.clone());
    let image_err = max_abs_diff(&image_rows, &matrix(&expected["image_embeds"]));
    let text_err = max_abs_diff(&text_rows, &matrix(&expected["text_embeds"]));
    assert!(
        image_err < TOLERANCE,
        "{model}: image embeddings differ by {image_err}"
    );
    assert!(
        text_err < TOLERANCE,
        "{model}: text embeddings differ by {text_err}"
    );

    let scale = expected["logit_scale"].as_f64().unwrap() as f32;
    assert!(
        (clip.logit_scale() - scale).abs() < 1e-6,
        "logit_scale read from the file"
    );
    let logits = image_embeds.matmul(text_embeds.transpose()) * clip.logit_scale().exp();
    // Logits are ~42x the embeddings, so their tolerance scales with it.
    let logit_err = max_abs_diff(&rows(logits), &matrix(&expected["logits_per_image"]));
    assert!(
        logit_err < 42.0 * TOLERANCE,
        "{model}: logits differ by {logit_err}"
    );
    clip
}

/// The open_clip hub folder of the fixtures (32-wide heads, its own preprocessing): its entry in
/// `reference.json` and its directory.
pub const HUB: &str = "openclip_hub";

/// Checks every weight format of the fixtures (open_clip safetensors and fp16 `.pt`, the GELU
/// model, a transformers directory and its `model.safetensors`, an open_clip hub folder and its
/// weight file) against the reference on `device`.
pub fn check_all_formats<B: Backend>(device: &B::Device) {
    let dir = fixtures();
    let quick = LoadOptions::default();
    check_against_reference::<B>(
        device,
        "openclip_quickgelu",
        &dir.join("openclip_quickgelu.safetensors"),
        &quick,
    );
    check_against_reference::<B>(
        device,
        "openclip_quickgelu",
        &dir.join("openclip_quickgelu_fp16.pt"),
        &quick,
    );
    let gelu = LoadOptions {
        activation: Some(Activation::Gelu),
        ..LoadOptions::default()
    };
    check_against_reference::<B>(
        device,
        "openclip_gelu",
        &dir.join("openclip_gelu.safetensors"),
        &gelu,
    );
    check_against_reference::<B>(device, "hf_clip", &dir.join("hf_clip"), &quick);
    // open_clip's hub folder states heads, activation and preprocessing, as a folder and as its
    // weight file with the configuration beside it.
    let hub = dir.join(HUB);
    check_against_reference::<B>(device, HUB, &hub, &quick);
    check_against_reference::<B>(
        device,
        HUB,
        &hub.join("open_clip_model.safetensors"),
        &quick,
    );
    check_against_reference::<B>(
        device,
        "hf_clip",
        &dir.join("hf_clip/model.safetensors"),
        &quick,
    );
    check_resnet_formats::<B>(device);
}

/// The ModifiedResNet fixture: its entry in `reference.json` and its hub folder.
pub const RESNET: &str = "resnet";
/// The ModifiedResNet fixture's hub folder.
pub const RESNET_HUB: &str = "resnet_hub";

/// The ModifiedResNet fixture (BatchNorm statistics away from their defaults) as an open_clip hub
/// folder, as its weight file alone (OpenAI's rules read its sizes), as a `torch.save` state dict
/// and as a TorchScript archive; the bare files state no heads, and the 8-wide text tower is not
/// OpenAI's 64-wide rule, so its one head is given.
fn check_resnet_formats<B: Backend>(device: &B::Device) {
    let dir = fixtures();
    let hub = dir.join(RESNET_HUB);
    check_against_reference::<B>(device, RESNET, &hub, &LoadOptions::default());
    let bare = LoadOptions {
        text_heads: Some(1),
        ..LoadOptions::default()
    };
    // The hub's weights away from their configuration: a bare safetensors state dict.
    let alone = std::env::temp_dir().join(format!("mocoop-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&alone).unwrap();
    let file = alone.join(format!("{:?}.safetensors", std::thread::current().id()));
    std::fs::copy(hub.join("open_clip_model.safetensors"), &file).unwrap();
    check_against_reference::<B>(device, RESNET, &file, &bare);
    std::fs::remove_file(&file).unwrap();
    for name in ["resnet_fp16.pt", "resnet.torchscript.pt"] {
        check_against_reference::<B>(device, RESNET, &dir.join(name), &bare);
    }
}

/// The QuickGELU open_clip fixture: its entry in `reference.json` and its safetensors file's stem.
const QUICKGELU: &str = "openclip_quickgelu";

/// The QuickGELU open_clip fixture, in f32.
pub fn load_quickgelu<B: Backend>(device: &B::Device) -> Clip<B> {
    Clip::load(
        &fixtures().join(format!("{QUICKGELU}.safetensors")),
        &LoadOptions::default(),
        device,
    )
    .unwrap()
}

/// Largest embedding difference to the reference at `precision`, and to our own f32 embeddings.
pub fn precision_errors<B: Backend>(precision: Precision, device: &B::Device) -> (f32, f32) {
    let reference = reference();
    let expected = &reference["models"][QUICKGELU];
    let full = load_quickgelu::<B>(device);
    let half = load_quickgelu::<B>(device).with_precision(precision);
    assert_eq!(half.precision(), precision);
    let (full_images, full_texts) = embed_reference_inputs(&full, &reference, device);
    let (images, texts) = embed_reference_inputs(&half, &reference, device);
    assert_eq!(images.dtype(), DType::F32, "features come out in f32");
    let (images, texts) = (rows(images), rows(texts));
    let to_reference = max_abs_diff(&images, &matrix(&expected["image_embeds"]))
        .max(max_abs_diff(&texts, &matrix(&expected["text_embeds"])));
    let to_full =
        max_abs_diff(&images, &rows(full_images)).max(max_abs_diff(&texts, &rows(full_texts)));
    eprintln!("{precision}: {to_reference} from the reference, {to_full} from our f32");
    (to_reference, to_full)
}
