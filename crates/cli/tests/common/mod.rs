//! What the end-to-end training tests share: the fixture CLIP, a miniature dataset in CoOp's layout
//! (DTD's folder and split file) of generated images whose class is their colour, and running the
//! `mocoop` binary.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Class names whose tokens have non-zero embeddings in the fixture model, and their colours.
pub const CLASSES: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("yellow", [230, 220, 40]),
    ("purple", [130, 40, 170]),
    ("brass", [60, 150, 220]),
];

pub fn weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/openclip_quickgelu.safetensors")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train_eval-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn mocoop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args(args)
        .output()
        .expect("mocoop runs")
}

pub fn ok(output: Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mocoop failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

pub fn failure(output: Output) -> String {
    assert!(!output.status.success(), "mocoop should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A 24-bit BMP of `size`×`size` pixels of `colour` with deterministic noise.
pub fn write_bmp(path: &Path, size: u32, colour: [u8; 3], seed: u32) {
    let row = (size * 3).div_ceil(4) * 4;
    let data = row * size;
    let mut bytes = Vec::with_capacity(54 + data as usize);
    bytes.extend_from_slice(b"BM");
    bytes.extend_from_slice(&(54 + data).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&54u32.to_le_bytes());
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(&(size as i32).to_le_bytes());
    bytes.extend_from_slice(&(size as i32).to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&24u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&data.to_le_bytes());
    bytes.extend_from_slice(&[0; 16]);
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..size {
        for _ in 0..size {
            for c in [2, 1, 0] {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let noise = ((state >> 16) % 61) as i32 - 30;
                bytes.push((i32::from(colour[c]) + noise).clamp(0, 255) as u8);
            }
        }
        bytes.resize(bytes.len() + (row - size * 3) as usize, 0);
    }
    std::fs::write(path, bytes).unwrap();
}

/// `root/dtd/images/class<label>/*.bmp` and `root/dtd/split_zhou_DescribableTextures.json` with
/// 8 training, 2 validation and 6 test images per class.
pub fn make_dataset(root: &Path, classes: &[(&str, [u8; 3])]) {
    let dir = root.join("dtd");
    let mut split = json!({"train": [], "val": [], "test": []});
    for (label, (name, colour)) in classes.iter().enumerate() {
        let folder = dir.join("images").join(format!("class{label}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..16 {
            let file = format!("class{label}/{i}.bmp");
            write_bmp(
                &dir.join("images").join(&file),
                40,
                *colour,
                (label * 100 + i) as u32,
            );
            let part = match i {
                0..8 => "train",
                8..10 => "val",
                _ => "test",
            };
            split[part]
                .as_array_mut()
                .unwrap()
                .push(json!([file, label, name]));
        }
    }
    std::fs::write(
        dir.join("split_zhou_DescribableTextures.json"),
        serde_json::to_string(&split).unwrap(),
    )
    .unwrap();
}

pub fn train_args<'a>(root: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let w = weights().to_str().unwrap().to_string().leak() as &str;
    let mut args = vec![
        "train",
        "--weights",
        w,
        "--dataset",
        "dtd",
        "--root",
        root,
        "--shots",
        "8",
        "--seed",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--quiet",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

pub fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn split<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == name)
        .unwrap_or_else(|| panic!("no {name} split in {results}"))
}

/// The flags of the resumable runs (6 epochs of 16 steps of 2 images, not quiet; MoCoOp's router
/// noise on unless `extra` names another method) and `extra`.
pub fn run_args_with<'a>(root: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--setting",
        "fewshot",
        "--epochs",
        "6",
        "--warmup-epochs",
        "1",
    ];
    if !extra.contains(&"--method") {
        flags.extend(["--router-noise", "0.5"]);
    }
    flags.extend_from_slice(extra);
    let mut args = train_args(root, out, &flags);
    args.retain(|a| *a != "--quiet");
    let batch = args.iter().position(|a| *a == "--batch-size").unwrap() + 1;
    args[batch] = "2";
    args
}

/// A base-to-new grid on dtd, shots 8, `seeds`, 2 epochs of batch 8, into `out`, with `extra`.
pub fn protocol_args<'a>(
    root: &'a str,
    out: &'a str,
    seeds: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let w = weights().to_str().unwrap().to_string().leak() as &str;
    let mut args = vec![
        "protocol",
        "base2new",
        "--weights",
        w,
        "--root",
        root,
        "--datasets",
        "dtd",
        "--seeds",
        seeds,
        "--shots",
        "8",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "--quiet",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// Starts `mocoop` with `args`, its output piped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mocoop starts")
}

/// The trained tensors of a run's final checkpoint, by name, as raw values.
pub fn trained(run: &Path) -> Vec<(String, Vec<f32>)> {
    let checkpoint = mocoop_train::checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
    checkpoint
        .tensors
        .into_iter()
        .map(|(name, data)| (name, data.to_vec::<f32>().unwrap()))
        .collect()
}

pub fn epochs_checkpointed(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("epoch-")?
                        .strip_suffix(".safetensors")?
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits until `run` has a checkpoint of epoch `epoch` or `child` exits; `true` if it is still
/// running.
pub fn wait_for_epoch(child: &mut Child, run: &Path, epoch: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if epochs_checkpointed(run) >= epoch {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no epoch {epoch} checkpoint after 300 s");
}

/// Sends SIGINT to the training `child` shortly after `run`'s second epoch checkpoint appears,
/// and waits for it to stop.
pub fn interrupt_in_epoch_3(mut child: Child, run: &Path) -> std::process::Output {
    assert!(wait_for_epoch(&mut child, run, 2), "the run ended early");
    std::thread::sleep(Duration::from_millis(30));
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    child.wait_with_output().unwrap()
}

/// Copies a run directory (files and one level of folders).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `mocoop eval` of the saved `run` counts as many correct test images as `trained`, the output
/// of the `mocoop train` that wrote it.
pub fn evaluates_identically(run: &Path, trained: &Value) {
    let eval = ok(mocoop(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--workers",
        "1",
    ]));
    let (again, before) = (split(&eval, "all"), split(&trained["results"], "all"));
    assert!(before["correct"].as_u64().is_some(), "{trained}");
    assert_eq!(again["correct"], before["correct"], "{eval} vs {trained}");
}
