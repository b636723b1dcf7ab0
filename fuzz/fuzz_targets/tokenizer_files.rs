//! `ClipTokenizer::from_hf_files` on arbitrary `vocab.json` / `merges.txt` contents (the input split
//! at its first NUL byte), then, when they are accepted, tokenizing text with the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_fuzz::{split_at_byte, write_scratch};
use mocoop_model::tokenizer::ClipTokenizer;

fuzz_target!(|data: &[u8]| {
    let (vocab, merges) = split_at_byte(data, 0);
    let vocab_path = write_scratch("tokenizer/vocab.json", vocab);
    let merges_path = write_scratch("tokenizer/merges.txt", merges);
    if let Ok(tokenizer) = ClipTokenizer::from_hf_files(&vocab_path, &merges_path) {
        let text = String::from_utf8_lossy(merges);
        let _ = tokenizer.tokenize(&text, 77);
        let _ = tokenizer.decode(&tokenizer.encode("a photo of a cat, 123!"));
    }
});
