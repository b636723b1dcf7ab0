//! Arbitrary bytes as a `.safetensors` checkpoint (OpenAI, transformers or native layout, the
//! native configuration living in its metadata), or, when the first byte is odd, as the
//! `config.json` of a transformers model directory whose weights are a minimal transformers file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_fuzz::write_scratch;
use mocoop_model::ClipConfig;
use mocoop_model::weights::{LoadOptions, load};

/// A safetensors file holding one transformers-named tensor: enough to reach `config.json`.
fn hf_weights() -> Vec<u8> {
    let header = r#"{"vision_model.embeddings.class_embedding":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let path = write_scratch("weights.safetensors", rest);
        let _ = load(&path, &LoadOptions::default());
    } else {
        let weights = write_scratch("hf/model.safetensors", &hf_weights());
        write_scratch("hf/config.json", rest);
        let _ = load(weights.parent().unwrap(), &LoadOptions::default());
        // The native configuration, as the loader parses it out of safetensors metadata.
        let _ = serde_json::from_slice::<ClipConfig>(rest);
    }
});
