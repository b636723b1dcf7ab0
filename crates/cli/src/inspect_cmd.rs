//! `mocoop inspect RUN`: what a run is and what its prompts learned. The run's settings, accuracy
//! and trainable parameter count; per expert its template, the training load the router gave it
//! and, for each learned context vector, the words of CLIP's vocabulary nearest to it (Euclidean
//! and cosine, as CoOp's `interpret_prompt.py`); the checkpoint's content digest; with
//! `--test-load`, each expert's share of the router's choices on the test split.

mod nearest;
mod run_files;

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use mocoop_model::prompt::ExpertLayout;
use mocoop_model::tokenizer::ClipTokenizer;
use serde::Serialize;

use crate::device::{DeviceSpec, OnBackend};
use crate::model_args::CheckpointArgs;
use crate::report::routing::expert_name;
use crate::report::run::serde_name;
use nearest::{Near, Neighbours, nearest, token_table};
use run_files::RunFiles;

/// Shows a run's settings, results and what its learned prompts are near in CLIP's vocabulary.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The run directory (made by `mocoop train`).
    #[arg(value_name = "RUN")]
    run: PathBuf,
    /// CLIP checkpoint (default: the one the run was trained with).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Nearest words shown per context vector and distance.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also run the router over the test split of the run's dataset (every test image is
    /// encoded: slow for large datasets) and show each expert's share of its choices.
    #[arg(long)]
    test_load: bool,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
}

impl InspectArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }
}

/// One learned context vector.
#[derive(Debug, Serialize)]
struct LearnedContext {
    /// Its position among the expert's context vectors.
    position: usize,
    /// The template word it started from (template initialisation).
    init_word: Option<String>,
    /// Its nearest words.
    nearest: Neighbours,
}

/// One expert.
#[derive(Debug, Serialize)]
struct Expert {
    index: usize,
    template: String,
    /// Share of the top-K router slots it got in the last training epoch.
    training_load: Option<f64>,
    /// Its share on the test split (with `--test-load`).
    test_load: Option<f64>,
    contexts: Vec<LearnedContext>,
}

/// Everything `inspect` shows.
#[derive(Debug, Serialize)]
struct Inspection {
    run: PathBuf,
    method: String,
    dataset: String,
    setting: String,
    shots: usize,
    seed: u64,
    /// The optimiser settings the run trained with (its recipe after the flags).
    recipe: mocoop_train::OptimConfig,
    epochs_trained: usize,
    epochs_planned: usize,
    /// Accuracy (%) per evaluated split.
    accuracy: Vec<(String, f64)>,
    harmonic_mean: Option<f64>,
    trainable_parameters: usize,
    /// The checkpoint's tensors and shapes.
    tensors: Vec<(String, Vec<usize>)>,
    checkpoint_digest: Option<String>,
    /// Test images the router ran over (with `--test-load`).
    test_images: Option<usize>,
    experts: Vec<Expert>,
}

impl OnBackend for InspectArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let files = run_files::read(&self.run)?;
        let checkpoint = CheckpointArgs::of_run(&files.config, self.weights.clone());
        let loaded = checkpoint.load::<B::InnerBackend>(&self.device, &device)?;
        let table = token_table(&loaded.clip, &device);
        let mut experts = experts(&files, &table, self.top, &loaded.tokenizer)?;
        let mut test_images = None;
        if self.test_load {
            let (load, images) = run_files::test_load(
                &self.run,
                &files.config,
                loaded.clip,
                &loaded.tokenizer,
                &device,
            )?;
            for (expert, share) in experts.iter_mut().zip(load) {
                expert.test_load = Some(share);
            }
            test_images = Some(images);
        }
        let mut inspection = summary(&self.run, files, experts);
        inspection.test_images = test_images;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&inspection)?);
        } else {
            print!("{}", text(&inspection));
        }
        Ok(())
    }
}

/// The experts with their contexts' nearest words.
fn experts<B: Backend>(
    files: &RunFiles,
    table: &burn::tensor::Tensor<B, 2>,
    top: usize,
    tokenizer: &ClipTokenizer,
) -> Result<Vec<Expert>> {
    let load = files
        .epochs
        .last()
        .map(|e| e.expert_load.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (g, init) in files.config.mixture.experts.iter().enumerate() {
        let count = files.config.mixture.layout.context_count;
        let layout =
            ExpertLayout::counted(init, tokenizer, count).context("the run's expert templates")?;
        let vectors: Vec<Vec<f32>> = match files.tensors.get(&format!("ctx.{g}")) {
            Some((shape, values)) => values
                .chunks(shape[1].max(1))
                .map(<[f32]>::to_vec)
                .collect(),
            None => Vec::new(),
        };
        let init_words = layout.init_ids.unwrap_or_default();
        let contexts = nearest(table, &vectors, top, tokenizer)?
            .into_iter()
            .enumerate()
            .map(|(position, nearest)| LearnedContext {
                position,
                init_word: init_words
                    .get(position)
                    .map(|&id| tokenizer.decode(&[id]).trim().to_string()),
                nearest,
            })
            .collect();
        out.push(Expert {
            index: g,
            template: expert_name(init),
            training_load: load.get(g).copied(),
            test_load: None,
            contexts,
        });
    }
    Ok(out)
}

fn summary(run: &std::path::Path, files: RunFiles, experts: Vec<Expert>) -> Inspection {
    let config = &files.config;
    let (accuracy, harmonic_mean) = match &files.results {
        Some(r) => (
            r.splits
                .iter()
                .map(|s| (format!("{} {}", s.dataset, s.split), s.accuracy))
                .collect(),
            r.hm,
        ),
        None => (Vec::new(), None),
    };
    Inspection {
        run: run.to_path_buf(),
        method: config.method.to_string(),
        dataset: config.data.dataset.clone(),
        setting: serde_name(&config.data.setting),
        shots: config.data.shots,
        seed: config.data.seed,
        recipe: config.optim.clone(),
        epochs_trained: files.epochs.len(),
        epochs_planned: config.optim.epochs,
        accuracy,
        harmonic_mean,
        trainable_parameters: files.tensors.values().map(|(_, v)| v.len()).sum(),
        tensors: files
            .tensors
            .iter()
            .map(|(n, (s, _))| (n.clone(), s.clone()))
            .collect(),
        checkpoint_digest: files.digest.clone(),
        test_images: None,
        experts,
    }
}

/// A list of nearest words: `word (distance), …`.
fn words(near: &[Near]) -> String {
    near.iter()
        .map(|n| format!("{} ({:.3})", n.word, n.distance))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The inspection as text.
fn text(i: &Inspection) -> String {
    let o = &i.recipe;
    let mut out = format!(
        "run          {}\nmethod       {}\ndataset      {} ({}, {} shots, seed {})\n\
         recipe       lr {} (warm-up {} epoch(s) at {}), momentum {}, weight decay {}, {} epochs\n\
         epochs       {} of {} trained\n",
        i.run.display(),
        i.method,
        i.dataset,
        i.setting,
        i.shots,
        i.seed,
        o.lr,
        o.warmup_epochs,
        o.warmup_lr,
        o.momentum,
        o.weight_decay,
        o.epochs,
        i.epochs_trained,
        i.epochs_planned
    );
    let accuracy: Vec<String> = i
        .accuracy
        .iter()
        .map(|(s, a)| format!("{s} {a:.2}%"))
        .collect();
    let hm = i
        .harmonic_mean
        .map_or(String::new(), |h| format!(", HM {h:.2}"));
    let accuracy = if accuracy.is_empty() {
        "not evaluated".to_string()
    } else {
        accuracy.join(", ")
    };
    out.push_str(&format!("accuracy     {accuracy}{hm}\n"));
    let tensors: Vec<String> = i
        .tensors
        .iter()
        .map(|(n, s)| format!("{n} {s:?}"))
        .collect();
    out.push_str(&format!(
        "trainable    {} parameters ({})\ncheckpoint   SHA-256 {}\n",
        i.trainable_parameters,
        tensors.join(", "),
        i.checkpoint_digest
            .as_deref()
            .unwrap_or("- (zero-shot: no checkpoint)")
    ));
    for e in &i.experts {
        out.push_str(&expert_text(e, i.test_images));
    }
    out
}

/// One expert as text: template, loads, each context's nearest words.
fn expert_text(e: &Expert, test_images: Option<usize>) -> String {
    let mut out = String::new();
    let mut load = e.training_load.map_or(String::new(), |l| {
        format!(
            ", {:.1}% of the router's choices in the last training epoch",
            100.0 * l
        )
    });
    if let (Some(share), Some(images)) = (e.test_load, test_images) {
        load.push_str(&format!(
            ", {:.1}% on the {images} test images",
            100.0 * share
        ));
    }
    out.push_str(&format!("\nexpert {}: {}{load}\n", e.index, e.template));
    for c in &e.contexts {
        let init = c
            .init_word
            .as_deref()
            .map_or(String::new(), |w| format!(" (from \"{w}\")"));
        out.push_str(&format!(
            "  context {}{init}\n    euclidean  {}\n    cosine     {}\n",
            c.position,
            words(&c.nearest.euclidean),
            words(&c.nearest.cosine)
        ));
    }
    out
}
