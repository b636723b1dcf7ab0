//! The embedded CLIP tokenizer on arbitrary text (bytes read as lossy UTF-8), and decoding of
//! arbitrary ids: errors are impossible here, so only panics, hangs and runaway memory count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_model::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};

fuzz_target!(|data: &[u8]| {
    let tokenizer = ClipTokenizer::embedded();
    let text = String::from_utf8_lossy(data);
    let ids = tokenizer.tokenize(&text, CONTEXT_LENGTH);
    assert_eq!(ids.len(), CONTEXT_LENGTH);
    let _ = tokenizer.decode(&tokenizer.encode(&text));
    let raw: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let _ = tokenizer.decode(&raw);
});
