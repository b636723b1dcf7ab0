//! Preprocessing against open_clip's evaluation transform (PIL decode, bicubic resize, center crop,
//! normalise), recorded by `tests/fixtures/make_reference.py`.
//!
//! Images already at the model's resolution must match exactly (decode + normalise only). Resized
//! images are compared with a tolerance: PIL rounds to 8 bits between its two resampling passes and
//! uses fixed-point filter weights, while we filter in floating point, so single pixels may differ by
//! a few levels (and JPEG decoders by a level or two).

use mocoop_model::preprocess::{load_rgb, preprocess};
use mocoop_test_support::reference::*;

#[test]
fn matches_open_clip_preprocessing() {
    let reference = reference();
    let size = reference["preprocess"]["size"].as_u64().unwrap() as u32;
    for case in reference["preprocess"]["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let image = load_rgb(&fixtures().join("images").join(name)).unwrap();
        let ours = preprocess(&image, size);
        let expected = vector(&case["pixels"]);
        assert_eq!(ours.len(), expected.len(), "{name}");
        let diffs: Vec<f32> = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let resized = case["resized_size_wh"] != case["source_size_wh"];
        // One 8-bit level is 1/255/std ≈ 0.015 in normalised units.
        let (max_allowed, mean_allowed) = if resized { (0.1, 0.01) } else { (1e-6, 1e-7) };
        assert!(
            max <= max_allowed && mean <= mean_allowed,
            "{name}: max diff {max}, mean diff {mean}"
        );
    }
}

#[test]
fn non_images_are_clear_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, b"hello, not a png").unwrap();
    for path in [empty, text, dir.join("missing.png")] {
        let err = load_rgb(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
