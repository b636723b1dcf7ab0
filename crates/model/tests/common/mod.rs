//! Shared access to the reference fixtures in `tests/fixtures/` at the repository root.
//!
//! The fixtures are produced by `tests/fixtures/make_reference.py` from random-weight open_clip and
//! transformers models (regenerate with `tests/fixtures/setup_reference_env.sh` then
//! `.venv-ref/bin/python tests/fixtures/make_reference.py`); CI only reads them.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde_json::Value;

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
