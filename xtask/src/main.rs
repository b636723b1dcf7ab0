//! Developer chores: `cargo xtask …`.
//!
//! - `cargo xtask download MODEL [--dir DIR] [--mirror URL]`: an OpenAI CLIP checkpoint, verified;
//! - `cargo xtask convert IN OUT [--precision f16|f32] [--activation quick_gelu|gelu] [--arch NAME |
//!   --open-clip-config FILE] [--vision-heads N --text-heads N]`: any checkpoint (or `hf:ORG/NAME`
//!   from the Hugging Face cache) to the native format;
//! - `cargo xtask bench-load [--dir DIR]`: load time of a ViT-B/16 per weight format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use mocoop_model::weights::LoadOptions;
use mocoop_model::weights::native::StoredPrecision;
use xtask::{bench, convert, download, human_bytes};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mocoop developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download one of OpenAI's released CLIP checkpoints (TorchScript .pt) and verify its SHA-256.
    Download {
        /// ViT-B/32, ViT-B/16, ViT-L/14 or ViT-L/14@336px (or the file stem, e.g. ViT-B-16).
        model: Option<String>,
        /// Directory to save into [default: ~/.cache/clip, shared with OpenAI's clip package].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Base address replacing https://openaipublic.azureedge.net/clip/models; files are fetched
        /// from <URL>/<sha256>/<file>.pt. Also read from MOCOOP_MIRROR.
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        /// List the available models.
        #[arg(long)]
        list: bool,
    },
    /// Convert a checkpoint (TorchScript, torch.save, open_clip safetensors or hub folder,
    /// transformers, native, or hf:ORG/NAME from the Hugging Face cache) to the native format
    /// (safetensors with the configuration embedded).
    Convert {
        /// Input file, transformers or open_clip model directory, or hf:ORG/NAME.
        input: PathBuf,
        /// Output file (.safetensors).
        output: PathBuf,
        /// Precision of the stored tensors.
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        /// What the input does not record (activation, open_clip architecture, heads).
        #[command(flatten)]
        load: LoadOptions,
    },
    /// Time loading a random ViT-B/16 from each weight format.
    BenchLoad {
        /// Where to write the temporary weight files.
        #[arg(long, default_value = "target/bench-load")]
        dir: PathBuf,
        /// Runs per file (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Keep the files afterwards.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    F16,
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Download {
            model,
            dir,
            mirror,
            list,
        } => {
            let Some(model) = model.filter(|_| !list) else {
                for r in download::RELEASES {
                    println!("{:<16} {:<20} sha256 {}", r.name, r.file, r.sha256);
                }
                return Ok(());
            };
            let release = download::find_release(&model).ok_or_else(|| {
                let names: Vec<&str> = download::RELEASES.iter().map(|r| r.name).collect();
                anyhow!(
                    "unknown model '{model}': expected one of {}",
                    names.join(", ")
                )
            })?;
            let base = download::base_address(mirror.as_deref());
            let url = download::release_url(&base, release);
            let dest = dir.unwrap_or_else(download::default_dir).join(release.file);
            eprintln!("{} <- {url}", dest.display());
            let fetched = download::fetch(
                &url,
                release.sha256,
                &dest,
                &download::FetchOptions::default(),
            )?;
            if fetched.already_present {
                println!(
                    "{} is already there ({}, SHA-256 verified)",
                    fetched.path.display(),
                    human_bytes(fetched.bytes)
                );
            } else {
                println!(
                    "{} ({}, SHA-256 verified{})",
                    fetched.path.display(),
                    human_bytes(fetched.bytes),
                    if fetched.resumed_from > 0 {
                        format!(", resumed from {}", human_bytes(fetched.resumed_from))
                    } else {
                        String::new()
                    }
                );
            }
            println!(
                "convert it for fast loading: cargo xtask convert {} {}",
                fetched.path.display(),
                fetched.path.with_extension("safetensors").display()
            );
            Ok(())
        }
        Task::Convert {
            input,
            output,
            precision,
            load,
        } => {
            let options = convert::ConvertOptions {
                precision: match precision {
                    Precision::F32 => StoredPrecision::F32,
                    Precision::F16 => StoredPrecision::F16,
                },
                load,
            };
            let converted = convert::convert(&input, &output, &options)?;
            println!(
                "read {}: {}, {:?} layout, {} tensors",
                input.display(),
                converted.format,
                converted.layout,
                converted.tensors
            );
            for (file, digest) in &converted.input_digests {
                println!("  {file}  sha256 {digest}");
            }
            println!("  {}", convert::describe(&converted.config));
            println!(
                "wrote {} ({}, {})",
                output.display(),
                human_bytes(converted.output_bytes),
                match precision {
                    Precision::F32 => "f32",
                    Precision::F16 => "f16",
                }
            );
            Ok(())
        }
        Task::BenchLoad { dir, repeats, keep } => {
            let timings = bench::bench_load(&dir, 0, repeats)?;
            println!(
                "ViT-B/16 ({} threads available), best of {repeats}:",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
            println!(
                "{:<18} {:>10} {:>12} {:>16}",
                "format", "size", "read (s)", "Clip::load (s)"
            );
            for t in &timings {
                println!(
                    "{:<18} {:>10} {:>12.3} {:>16.3}",
                    t.label,
                    human_bytes(t.bytes),
                    t.read.as_secs_f64(),
                    t.load.as_secs_f64()
                );
                if !keep {
                    let _ = std::fs::remove_file(&t.path);
                }
            }
            Ok(())
        }
    }
}
