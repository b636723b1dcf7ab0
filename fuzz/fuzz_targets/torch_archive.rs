//! Arbitrary bytes as a `.pt` file: zip parsing, TorchScript detection, storage reading and the
//! `torch.save` path, all through the public loader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_fuzz::write_scratch;
use mocoop_model::weights::{LoadOptions, load};

fuzz_target!(|data: &[u8]| {
    let path = write_scratch("archive.pt", data);
    let _ = load(&path, &LoadOptions::default());
});
