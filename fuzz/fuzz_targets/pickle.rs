//! The pickle readers on an arbitrary `data.pkl`: the first byte picks the archive it is wrapped
//! in, a TorchScript archive (our own pickle machine) or a `torch.save` archive (the restricted
//! validator in front of burn-store). The rest of the input is the pickle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_fuzz::{write_scratch, zip_archive};
use mocoop_model::weights::{LoadOptions, load};

/// Storage bytes offered beside the pickle, so that small tensors can be read to the end.
const STORAGE: [u8; 64] = [0; 64];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, pickle)) = data.split_first() else {
        return;
    };
    let archive = if mode % 2 == 0 {
        zip_archive(&[
            ("m/data.pkl", pickle),
            ("m/constants.pkl", b"\x80\x02)."),
            ("m/data/0", &STORAGE),
            ("m/version", b"3\n"),
        ])
    } else {
        zip_archive(&[
            ("archive/data.pkl", pickle),
            ("archive/byteorder", b"little"),
            ("archive/data/0", &STORAGE),
            ("archive/version", b"3\n"),
        ])
    };
    let path = write_scratch("pickle.pt", &archive);
    let _ = load(&path, &LoadOptions::default());
});
