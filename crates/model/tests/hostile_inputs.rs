//! Hostile and malformed weight files and images (issue #8): each must be a clean error naming the
//! file, found before anything large is allocated, never a panic, a stack overflow or a hang.

use std::io::Write;
use std::path::PathBuf;

use mocoop_model::preprocess::load_rgb;
use mocoop_model::weights::{self, LoadOptions, WeightsError};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes `bytes` as `name` and loads it, expecting a format error that names the file and
/// contains `needle`.
fn expect_rejected(name: &str, bytes: &[u8], needle: &str) {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    match weights::load(&path, &LoadOptions::default()) {
        Ok(_) => panic!("{name} loaded, but should not"),
        Err(error @ (WeightsError::Format { .. } | WeightsError::Config(_))) => {
            let text = error.to_string();
            assert!(text.contains(needle), "{name}: '{needle}' not in: {text}");
            if let WeightsError::Format { .. } = error {
                assert!(text.contains(name), "{name} not named in: {text}");
            }
        }
        Err(other) => panic!("{name}: unexpected error kind: {other}"),
    }
}

/// A zip archive holding `entries` uncompressed, as `torch.save` writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A `torch.save`-style archive (no `constants.pkl`, so not TorchScript) around `pickle`.
fn torch_save(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    zip(&[
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
        ("archive/data/0", storage),
    ])
}

/// A TorchScript-style archive around `pickle`.
fn torchscript(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    zip(&[
        ("m/data.pkl", pickle),
        ("m/constants.pkl", b"\x80\x02)."),
        ("m/data/0", storage),
    ])
}

/// `{'w': _rebuild_tensor_v2(<FloatStorage '0' of `numel` elements>, 0, (size,), (stride,))}` as
/// a protocol-2 pickle; the integers are 8-byte `LONG1`s.
fn one_tensor_pickle(numel: u64, size: u64, stride: u64) -> Vec<u8> {
    let long = |v: u64| {
        let mut out = vec![0x8a, 8];
        out.extend_from_slice(&v.to_le_bytes());
        out
    };
    let mut p = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000");
    p.extend_from_slice(b"X\x03\x00\x00\x00cpu");
    p.extend(long(numel));
    p.extend_from_slice(b"tQK\x00");
    p.extend(long(size));
    p.push(0x85);
    p.extend(long(stride));
    p.extend_from_slice(b"\x85\x89)tRs.");
    p
}

#[test]
fn deeply_nested_torch_save_pickle_is_refused_before_burn_store() {
    // {'x': [[[…]]]}, 100 000 lists deep: burn-store's recursive reader would overflow the stack.
    let depth = 100_000;
    let mut pickle = b"\x80\x02}X\x01\x00\x00\x00x".to_vec();
    pickle.extend(std::iter::repeat_n(b']', depth));
    pickle.extend(std::iter::repeat_n(b'a', depth - 1));
    pickle.extend_from_slice(b"s.");
    expect_rejected("nested.pt", &torch_save(&pickle, &[]), "nested more than");
    // The same with tuples, and as the value of a state dict inside a checkpoint dict.
    let mut tuples = b"\x80\x02}X\x0a\x00\x00\x00state_dict)".to_vec();
    tuples.extend(std::iter::repeat_n(0x85, depth));
    tuples.extend_from_slice(b"s.");
    expect_rejected(
        "nested_tuples.bin",
        &torch_save(&tuples, &[]),
        "nested more than",
    );
}

#[test]
fn torch_save_pickles_outside_the_allow_list_are_refused() {
    let eval = b"\x80\x02}X\x01\x00\x00\x00xcbuiltins\neval\nX\x03\x00\x00\x001+1\x85Rs.";
    expect_rejected("eval.pt", &torch_save(eval, &[]), "builtins.eval");
    // A list at the root is not a state dict.
    expect_rejected(
        "list_root.pt",
        &torch_save(b"\x80\x02].", &[]),
        "not a dict",
    );
    // Not a zip archive (the pre-1.6 format, or anything else): burn-store never sees it.
    expect_rejected("legacy.pt", b"\x80\x02}.", "zip");
}

#[test]
fn huge_declared_storages_and_views_are_refused_before_allocation() {
    let storage = [0u8; 16];
    // A storage declared as 2^40 floats (4 TiB) beside 16 real bytes.
    let huge = one_tensor_pickle(1 << 40, 4, 1);
    expect_rejected(
        "huge_storage.pt",
        &torch_save(&huge, &storage),
        "holds 16 bytes",
    );
    expect_rejected(
        "huge_storage_ts.pt",
        &torchscript(&huge, &storage),
        "holds 16 bytes",
    );
    // A 2^40-element view of a 4-element storage through stride 0.
    let broadcast = one_tensor_pickle(4, 1 << 40, 0);
    expect_rejected(
        "broadcast.pt",
        &torch_save(&broadcast, &storage),
        "more elements",
    );
    expect_rejected(
        "broadcast_ts.pt",
        &torchscript(&broadcast, &storage),
        "more elements",
    );
    // Element counts whose byte size overflows.
    let overflow = one_tensor_pickle(u64::MAX / 2, 1, 1);
    expect_rejected("overflow.pt", &torch_save(&overflow, &storage), "overflows");
}

#[test]
fn shared_containers_cannot_make_the_walk_exponential() {
    // D0 = {}; D(i) = {'a': D(i-1), …, 'h': D(i-1)}, 30 levels: 8^30 paths through 30 dicts.
    let mut pickle = b"\x80\x02}X\x01\x00\x00\x00r}q\x00".to_vec();
    for level in 1..=30u8 {
        pickle.extend_from_slice(b"}(");
        for key in b'a'..=b'h' {
            pickle.extend_from_slice(&[b'X', 1, 0, 0, 0, key, b'h', level - 1]);
        }
        pickle.extend_from_slice(&[b'u', b'q', level]);
    }
    pickle.extend_from_slice(b"s.");
    expect_rejected("shared.pt", &torch_save(&pickle, &[]), "more than");
    expect_rejected("shared_ts.pt", &torchscript(&pickle, &[]), "more than");
}

/// A safetensors file with the given JSON header and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn hostile_safetensors_headers_are_refused() {
    // A header length of 2^64 - 1.
    expect_rejected("header_len.safetensors", &[0xff; 16], "header");
    // A header that claims more bytes than the file holds, or is not JSON.
    let mut short = 1_000_000u64.to_le_bytes().to_vec();
    short.extend_from_slice(b"{}");
    expect_rejected("short_header.safetensors", &short, "header");
    expect_rejected("not_json.safetensors", &safetensors("{nope", &[]), "header");
    // Dimensions whose product is 2^80 elements, over 4 bytes of data.
    let huge =
        r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}"#;
    expect_rejected(
        "huge_shape.safetensors",
        &safetensors(huge, &[0; 4]),
        "invalid",
    );
    // A shape that disagrees with its data.
    let wrong = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,4]}}"#;
    expect_rejected(
        "wrong_shape.safetensors",
        &safetensors(wrong, &[0; 4]),
        "invalid",
    );
    // Data types no CLIP weight has.
    for (dtype, shape) in [("U8", 4), ("BOOL", 4), ("I32", 1)] {
        let header =
            format!(r#"{{"w":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[0,4]}}}}"#);
        expect_rejected(
            &format!("dtype_{dtype}.safetensors"),
            &safetensors(&header, &[0; 4]),
            "unsupported dtype",
        );
    }
}

#[test]
fn huge_declared_dimensions_do_not_reach_the_configuration() {
    // Empty tensors (zero bytes, so safetensors accepts them) declaring 2^62 + 1 positions (a
    // 2^31-patch grid) of 2^40-pixel patches: inferring the image size must fail cleanly instead
    // of overflowing or looping over the positions.
    let tensors = [
        ("visual.conv1.weight", "[8,3,1099511627776,0]", 0),
        ("visual.positional_embedding", "[4611686018427387905,0]", 0),
        (
            "visual.transformer.resblocks.0.attn.in_proj_weight",
            "[0]",
            0,
        ),
        ("transformer.resblocks.0.attn.in_proj_weight", "[0]", 0),
        ("text_projection", "[0,4]", 0),
        ("ln_final.weight", "[8]", 32),
    ];
    let entries: Vec<String> = tensors
        .iter()
        .map(|(name, shape, end)| {
            format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[0,{end}]}}"#)
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let path = scratch("huge_positions.safetensors");
    std::fs::write(&path, safetensors(&header, &[0; 32])).unwrap();
    let error = weights::load(&path, &LoadOptions::default()).unwrap_err();
    assert!(error.to_string().contains("too large"), "{error}");
}

/// A PNG whose header declares `width` x `height` RGB pixels, with no pixel data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn images_declaring_huge_sizes_or_holding_nothing_are_clean_errors() {
    // 100 000 x 100 000 RGB would be 30 GB: refused by the decoder's memory limit up front.
    let huge = scratch("huge.png");
    std::fs::write(&huge, png_header(100_000, 100_000)).unwrap();
    let empty = scratch("zero_bytes.png");
    std::fs::write(&empty, b"").unwrap();
    for path in [huge, empty] {
        let error = load_rgb(&path).unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
}

#[test]
fn repeated_copies_of_a_large_container_are_bounded() {
    // A list of 100 000 memoised pairs, turned into an OrderedDict 1 000 times over: 2 bytes per
    // copy in the file, 10^8 values in memory unless the machine counts what it creates.
    let mut pickle = b"\x80\x02}X\x01\x00\x00\x00xNN\x86q\x01]q\x02(".to_vec();
    for _ in 0..100_000 {
        pickle.extend_from_slice(b"h\x01");
    }
    pickle.extend_from_slice(b"e0ccollections\nOrderedDict\nq\x03");
    for _ in 0..1_000 {
        pickle.extend_from_slice(b"h\x03h\x02\x85R0");
    }
    pickle.extend_from_slice(b"0Ns.");
    expect_rejected("copies.pt", &torch_save(&pickle, &[]), "creates more than");
}

/// A safetensors header entry for an F32 tensor at `[start, end)`.
fn entry(name: &str, shape: &str, start: usize, end: usize) -> String {
    format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":[{start},{end}]}}"#)
}

#[test]
fn degenerate_transformers_tensors_are_errors_not_panics_or_hangs() {
    let dir = scratch("hf_degenerate");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let prefix = "vision_model.encoder.layers.0.self_attn";
    // Scalar q/k/v projections: there is no first axis to stack them along.
    let scalars: Vec<String> = ["q", "k", "v"]
        .iter()
        .enumerate()
        .map(|(i, p)| entry(&format!("{prefix}.{p}_proj.weight"), "[]", 4 * i, 4 * i + 4))
        .collect();
    let header = format!("{{{}}}", scalars.join(","));
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors(&header, &[0; 12]),
    )
    .unwrap();
    let error = weights::load(&dir, &LoadOptions::default()).unwrap_err();
    assert!(error.to_string().contains("at least one axis"), "{error}");
    // An empty projection of 2^40 rows: transposing it must not walk the rows.
    let header = format!(
        "{{{},{}}}",
        entry("visual_projection.weight", "[1099511627776,0]", 0, 0),
        entry("vision_model.embeddings.class_embedding", "[1]", 0, 4)
    );
    std::fs::write(dir.join("model.safetensors"), safetensors(&header, &[0; 4])).unwrap();
    let error = weights::load(&dir, &LoadOptions::default()).unwrap_err();
    assert!(error.to_string().contains("visual.conv1.weight"), "{error}");
}
