//! `cargo xtask bench-load`: how long a ViT-B/16 takes to load, per weight format.
//!
//! A random ViT-B/16 (seeded, OpenAI layout) is written as native files (f32 and f16), as a
//! `torch.save` state dict (f32, and f16 like OpenAI's release) and as a TorchScript-style archive
//! (f16, the layout of OpenAI's `.pt` files); each is then read into canonical tensors
//! ([`weights::load`]) and into a model on the CPU backend ([`Clip::load`]), best of a few runs
//! (so with a warm page cache).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::backend::Flex;
use burn::tensor::{DType, TensorData};
use mocoop_model::weights::native::{self, StoredPrecision};
use mocoop_model::weights::{self, LoadOptions, StateDict};
use mocoop_model::{Clip, ClipConfig};

use crate::layout::openai_tensors;

/// Timing of one file.
#[derive(Debug, Clone)]
pub struct Timing {
    /// What the file is.
    pub label: String,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Best time to read it into canonical tensors.
    pub read: Duration,
    /// Best time to read it and build the model (`Clip::<Flex>::load`).
    pub load: Duration,
}

/// The formats compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Native(StoredPrecision),
    TorchSave(DType),
    TorchScript,
}

/// Writes the files into `dir`, times each `repeats` times, and returns the best times.
pub fn bench_load(dir: &Path, seed: u64, repeats: usize) -> Result<Vec<Timing>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = ClipConfig::vit_b_16();
    let tensors = random_tensors(&config, seed)?;
    let formats = [
        (
            "native f32",
            Format::Native(StoredPrecision::F32),
            "vit_b_16_native_f32.safetensors",
        ),
        (
            "native f16",
            Format::Native(StoredPrecision::F16),
            "vit_b_16_native_f16.safetensors",
        ),
        (
            "torch.save f32",
            Format::TorchSave(DType::F32),
            "vit_b_16_torch_save_f32.pt",
        ),
        (
            "torch.save f16",
            Format::TorchSave(DType::F16),
            "vit_b_16_torch_save_f16.pt",
        ),
        (
            "TorchScript f16",
            Format::TorchScript,
            "vit_b_16_torchscript_f16.pt",
        ),
    ];
    let mut timings = Vec::new();
    for (label, format, file) in formats {
        let path = dir.join(file);
        write(&tensors, &config, format, &path)?;
        let bytes = std::fs::metadata(&path)?.len();
        let device = Default::default();
        let mut read = Duration::MAX;
        let mut load = Duration::MAX;
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            let loaded = weights::load(&path, &LoadOptions::default())
                .with_context(|| format!("reading {}", path.display()))?;
            read = read.min(start.elapsed());
            drop(loaded);

            let start = Instant::now();
            let clip = Clip::<Flex>::load(&path, &LoadOptions::default(), &device)
                .with_context(|| format!("loading {}", path.display()))?;
            load = load.min(start.elapsed());
            drop(clip);
        }
        timings.push(Timing {
            label: label.to_string(),
            path,
            bytes,
            read,
            load,
        });
    }
    Ok(timings)
}

/// Every tensor of a random model of this geometry, in OpenAI layout (f32).
fn random_tensors(config: &ClipConfig, seed: u64) -> Result<BTreeMap<String, TensorData>> {
    let mut random = StateDict::random(seed);
    openai_tensors(config)
        .into_iter()
        .map(|(name, shape)| {
            let data = random.take(&name, &shape)?;
            Ok((name, data))
        })
        .collect()
}

fn write(
    tensors: &BTreeMap<String, TensorData>,
    config: &ClipConfig,
    format: Format,
    path: &Path,
) -> Result<()> {
    match format {
        Format::Native(precision) => {
            let state = StateDict::new(tensors.clone());
            native::save(
                &state,
                config,
                "cargo xtask bench-load (random)",
                precision,
                path,
            )?;
        }
        Format::TorchSave(dtype) => write_pytorch_archive(tensors, dtype, false, path)?,
        Format::TorchScript => write_pytorch_archive(tensors, DType::F16, true, path)?,
    }
    Ok(())
}

/// Writes a PyTorch zip archive: `torch.save` of a state dict, or (`module`) a TorchScript-style
/// archive whose root is a `__torch__` module object holding the tensors, with `constants.pkl`.
fn write_pytorch_archive(
    tensors: &BTreeMap<String, TensorData>,
    dtype: DType,
    module: bool,
    path: &Path,
) -> Result<()> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("archive");
    let converted: Vec<(&str, TensorData)> = tensors
        .iter()
        .map(|(name, data)| (name.as_str(), data.clone().convert_dtype(dtype)))
        .collect();
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    ));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(format!("{stem}/data.pkl"), stored)?;
    zip.write_all(&state_dict_pickle(&converted, module))?;
    if module {
        zip.start_file(format!("{stem}/constants.pkl"), stored)?;
        zip.write_all(b"\x80\x02).")?;
    }
    for (i, (_, data)) in converted.iter().enumerate() {
        zip.start_file(format!("{stem}/data/{i}"), stored)?;
        zip.write_all(data.as_bytes())?;
    }
    zip.start_file(format!("{stem}/version"), stored)?;
    zip.write_all(b"3\n")?;
    zip.start_file(format!("{stem}/byteorder"), stored)?;
    zip.write_all(b"little")?;
    zip.finish()?.flush()?;
    Ok(())
}

/// The pickle `torch.save` writes for a state dict of contiguous tensors (protocol 2): an
/// `OrderedDict` of `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, storage
/// `i` being tensor `i`. With `module`, the dict is instead the state of a `__torch__` object, as in
/// TorchScript archives.
fn state_dict_pickle(tensors: &[(&str, TensorData)], module: bool) -> Vec<u8> {
    fn global(p: &mut Vec<u8>, module: &str, name: &str) {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn string(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        match i32::try_from(v) {
            Ok(v) => {
                p.push(b'J');
                p.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                p.extend_from_slice(&[0x8a, 8]);
                p.extend_from_slice(&(v as u64).to_le_bytes());
            }
        }
    }
    fn tuple(p: &mut Vec<u8>, values: &[usize]) {
        p.push(b'(');
        for &v in values {
            int(p, v);
        }
        p.push(b't');
    }

    let mut p = vec![0x80, 2];
    if module {
        global(&mut p, "__torch__", "BenchModule");
        p.extend_from_slice(b")\x81}");
    } else {
        global(&mut p, "collections", "OrderedDict");
        p.extend_from_slice(b")R");
    }
    p.push(b'(');
    for (i, (name, data)) in tensors.iter().enumerate() {
        let shape = data.shape.to_vec();
        let mut stride = vec![1usize; shape.len()];
        for axis in (0..shape.len().saturating_sub(1)).rev() {
            stride[axis] = stride[axis + 1] * shape[axis + 1];
        }
        let storage = if data.dtype == DType::F16 {
            "HalfStorage"
        } else {
            "FloatStorage"
        };
        string(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend_from_slice(b"((");
        string(&mut p, "storage");
        global(&mut p, "torch", storage);
        string(&mut p, &i.to_string());
        string(&mut p, "cpu");
        int(&mut p, shape.iter().product());
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        tuple(&mut p, &shape);
        tuple(&mut p, &stride);
        p.push(0x89);
        global(&mut p, "collections", "OrderedDict");
        p.extend_from_slice(b")Rt");
        p.push(b'R');
    }
    p.push(b'u');
    if module {
        p.push(b'b');
    }
    p.push(b'.');
    p
}
