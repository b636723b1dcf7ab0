//! The dataset list readers on arbitrary content. The first byte picks the file: a CoOp split file
//! (`split_zhou_*.json`), a CSV or JSON list (with a `classnames.txt` beside it), ImageNet's
//! `classnames.txt`, or FGVC-Aircraft's variant lists. Several files come from one input split at
//! NUL bytes. Images never exist here, so reading stops at the first listed image at the latest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mocoop_data::{load_dataset, read_classnames_txt};
use mocoop_fuzz::{fresh_dir, split_at_byte};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let root = fresh_dir("data");
    let write = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    match mode % 5 {
        0 => {
            write("split_zhou_ShapeWorld.json", rest);
            let _ = load_dataset("shapeworld", &root);
        }
        1 => {
            let (list, names) = split_at_byte(rest, 0);
            write("classnames.txt", names);
            let _ = load_dataset("list", &write("list.csv", list));
        }
        2 => {
            let (list, names) = split_at_byte(rest, 0);
            write("classnames.txt", names);
            let _ = load_dataset("list", &write("list.json", list));
        }
        3 => {
            let _ = read_classnames_txt("imagenet", &write("classnames.txt", rest));
        }
        _ => {
            let (variants, rest) = split_at_byte(rest, 0);
            let (train, rest) = split_at_byte(rest, 0);
            let (val, test) = split_at_byte(rest, 0);
            write("variants.txt", variants);
            write("images_variant_train.txt", train);
            write("images_variant_val.txt", val);
            write("images_variant_test.txt", test);
            let _ = load_dataset("fgvc_aircraft", &root);
        }
    }
});
