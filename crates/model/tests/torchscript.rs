//! TorchScript archives (the format of OpenAI's released `.pt` files): loading, conversion to the
//! native format, and refusal of malformed or hostile archives.
//!
//! The fixture `tests/fixtures/openclip_quickgelu.torchscript.pt` is the `openclip_quickgelu` model of
//! `reference.json` (same weights as `openclip_quickgelu.safetensors`), traced with `torch.jit.trace`,
//! converted to fp16 like OpenAI's release and written with `torch.jit.save`, with OpenAI's extra
//! `input_resolution` / `context_length` / `vocab_size` tensors. It is regenerated with the other
//! fixtures: `tests/fixtures/setup_reference_env.sh`, then
//! `.venv-ref/bin/python tests/fixtures/make_reference.py`.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::DType;
use mocoop_model::weights::native::{self, StoredPrecision};
use mocoop_model::weights::{self, LoadOptions, WeightLayout, WeightsError};
use mocoop_test_support::reference::*;

const MODEL: &str = "openclip_quickgelu";

fn fixture() -> PathBuf {
    fixtures().join("openclip_quickgelu.torchscript.pt")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("torchscript-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Checks a model file's embeddings, logits and temperature against `reference.json`.
fn check_embeddings(file: &Path) {
    check_against_reference::<Flex>(&Default::default(), MODEL, file, &LoadOptions::default());
}

#[test]
fn torchscript_fixture_matches_reference() {
    check_embeddings(&fixture());
}

#[test]
fn torchscript_reads_openai_layout_in_fp16() {
    let loaded = weights::load(&fixture(), &LoadOptions::default()).unwrap();
    assert_eq!(loaded.layout, WeightLayout::OpenAi);
    let names: Vec<&str> = loaded.state.names().collect();
    for dropped in [
        "input_resolution",
        "context_length",
        "vocab_size",
        "attn_mask",
    ] {
        assert!(!names.contains(&dropped), "{dropped} is not a weight");
    }
    // Exactly the tensors of the safetensors file, same values, stored as fp16.
    let reference = weights::load(
        &fixtures().join("openclip_quickgelu.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        names,
        reference.state.names().collect::<Vec<_>>(),
        "tensor names"
    );
    for name in names {
        let ours = loaded.state.get(name).unwrap();
        let theirs = reference.state.get(name).unwrap();
        assert_eq!(ours.dtype, DType::F16, "{name}");
        assert_eq!(ours.shape, theirs.shape, "{name}");
        assert_eq!(
            ours.clone().convert::<f32>().to_vec::<f32>().unwrap(),
            theirs.clone().convert::<f32>().to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
    assert_eq!(loaded.config, reference.config);
}

#[test]
fn torchscript_converts_to_native() {
    for (precision, file) in [
        (StoredPrecision::F32, "converted_f32.safetensors"),
        (StoredPrecision::F16, "converted_f16.safetensors"),
    ] {
        // What `cargo xtask convert` does: load any format, save natively.
        let loaded = weights::load(&fixture(), &LoadOptions::default()).unwrap();
        let out = scratch(file);
        native::save(
            &loaded.state,
            &loaded.config,
            "openclip_quickgelu.torchscript.pt (test)",
            precision,
            &out,
        )
        .unwrap();
        let reread = weights::load(&out, &LoadOptions::default()).unwrap();
        assert_eq!(reread.layout, WeightLayout::Native);
        assert_eq!(reread.config, loaded.config);
        check_embeddings(&out);
    }
}

#[test]
fn deflated_archive_reads_the_same() {
    // torch writes entries uncompressed; a re-zipped (deflated) copy must read identically.
    let out = scratch("deflated.pt");
    let mut source = zip::ZipArchive::new(std::fs::File::open(fixture()).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for i in 0..source.len() {
        let mut entry = source.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        writer.start_file(name, options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
    assert!(std::fs::metadata(&out).unwrap().len() < std::fs::metadata(fixture()).unwrap().len());
    let a = weights::load(&fixture(), &LoadOptions::default()).unwrap();
    let b = weights::load(&out, &LoadOptions::default()).unwrap();
    let names: Vec<&str> = a.state.names().collect();
    assert!(!names.is_empty());
    assert_eq!(names, b.state.names().collect::<Vec<_>>());
    for name in names {
        let (x, y) = (a.state.get(name), b.state.get(name));
        assert!(x.is_some() && x == y, "{name}");
    }
}

/// Writes a zip archive with the given entries (stored, uncompressed).
fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// Loading must fail with a format error whose message contains `needle` (and not panic).
fn expect_format_error(path: &Path, needle: &str) {
    match weights::load(path, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded, but should not", path.display()),
        Err(WeightsError::Format { message, .. }) => assert!(
            message.contains(needle),
            "error for {} should mention '{needle}': {message}",
            path.display()
        ),
        Err(other) => panic!("unexpected error kind for {}: {other}", path.display()),
    }
}

/// The fixture's own entries, with `data.pkl` and storage `0` optionally replaced.
fn fixture_entries() -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(fixture()).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            (entry.name().to_string(), bytes)
        })
        .collect()
}

fn write_entries(path: &Path, entries: &[(String, Vec<u8>)]) {
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_zip(path, &borrowed);
}

#[test]
fn truncated_file_is_an_error() {
    let bytes = std::fs::read(fixture()).unwrap();
    for (i, len) in [0, 100, bytes.len() / 2, bytes.len() - 10]
        .into_iter()
        .enumerate()
    {
        let out = scratch(&format!("truncated_{i}.pt"));
        std::fs::write(&out, &bytes[..len]).unwrap();
        let result = weights::load(&out, &LoadOptions::default());
        assert!(
            matches!(result, Err(WeightsError::Format { .. })),
            "truncated to {len} bytes"
        );
    }
}

#[test]
fn malformed_archives_are_errors() {
    let entries = fixture_entries();
    let pickle_name = entries
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap()
        .0
        .clone();
    let prefix = pickle_name.strip_suffix("data.pkl").unwrap().to_string();

    // data.pkl cut short.
    let mut cut = entries.clone();
    for (name, bytes) in &mut cut {
        if *name == pickle_name {
            bytes.truncate(bytes.len() / 2);
        }
    }
    let out = scratch("cut_pickle.pt");
    write_entries(&out, &cut);
    expect_format_error(&out, "truncated");

    // A storage shorter than the pickle says.
    let mut short = entries.clone();
    for (name, bytes) in &mut short {
        if *name == format!("{prefix}data/0") {
            bytes.truncate(bytes.len() - 2);
        }
    }
    let out = scratch("short_storage.pt");
    write_entries(&out, &short);
    expect_format_error(&out, "storage");

    // A storage missing altogether.
    let missing: Vec<_> = entries
        .iter()
        .filter(|(name, _)| *name != format!("{prefix}data/1"))
        .cloned()
        .collect();
    let out = scratch("missing_storage.pt");
    write_entries(&out, &missing);
    expect_format_error(&out, "missing");

    // A tensor reaching past its storage: 2 fp16 elements declared, 3 viewed.
    let pickle = b"\x80\x02c__torch__\nM\n)\x81}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n\
        ((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ\
        K\x00K\x03\x85K\x01\x85\x89)tRub.";
    let out = scratch("overreach.pt");
    write_zip(
        &out,
        &[
            ("m/data.pkl", pickle),
            ("m/data/0", &[0u8; 4]),
            ("m/constants.pkl", b"\x80\x02).".as_slice()),
            ("m/version", b"3\n"),
        ],
    );
    expect_format_error(&out, "reaches past");
}

#[test]
fn forbidden_globals_are_rejected() {
    // `os.system('echo pwned')` as a pickle: GLOBAL os system, ('echo pwned',), REDUCE.
    let global = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";
    // The same through STACK_GLOBAL (protocol 4) with builtins.eval.
    let stack_global =
        b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x0a1+1\x20\x20\x20\x20\x20\x20\x85R.";
    for (name, pickle, needle) in [
        ("global.pt", global.as_slice(), "os.system"),
        ("stack_global.pt", stack_global.as_slice(), "builtins.eval"),
    ] {
        let out = scratch(name);
        write_zip(
            &out,
            &[
                ("evil/data.pkl", pickle),
                ("evil/constants.pkl", b"\x80\x02).".as_slice()),
                ("evil/version", b"3\n"),
            ],
        );
        expect_format_error(&out, needle);
    }
}

#[test]
fn deeply_nested_pickles_are_errors_not_crashes() {
    // A million nested 1-tuples (dropped without recursing), and dicts nested 100 000 deep (refused
    // when walked): neither may overflow the stack.
    let mut tuples = b"\x80\x02)".to_vec();
    tuples.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    tuples.push(b'.');
    let mut dicts = b"\x80\x02".to_vec();
    for _ in 0..100_000 {
        dicts.extend_from_slice(b"}X\x01\x00\x00\x00k");
    }
    dicts.push(b'N');
    dicts.extend(std::iter::repeat_n(b's', 100_000));
    dicts.push(b'.');
    for (name, pickle, needle) in [
        ("tuples.pt", tuples, "no tensors"),
        ("dicts.pt", dicts, "nested more than"),
    ] {
        let out = scratch(name);
        write_zip(
            &out,
            &[
                ("deep/data.pkl", pickle.as_slice()),
                ("deep/constants.pkl", b"\x80\x02).".as_slice()),
            ],
        );
        expect_format_error(&out, needle);
    }
}
