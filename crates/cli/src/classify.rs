//! `mocoop classify`: zero-shot classification of images or folders with a CLIP checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use mocoop_model::clip::l2_normalize;
use mocoop_model::preprocess::{batch_tensor, load_rgb};
use mocoop_model::prompt::PromptClassifier;
use mocoop_model::templates::{TemplateTable, fill};
use mocoop_train::methods::cached::TextCachedClassifier;
use mocoop_train::{ImageClassifier, TrainedRun};
use serde_json::json;

use crate::class_names::parse_class_names;
use crate::device::OnBackend;
use crate::model_args::{BATCH, LoadedClip, ModelArgs, to_rows};

/// File extensions taken when walking a directory.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp"];

/// Zero-shot classifies images: a table by default, JSON lines with `--json`. Unreadable images
/// are reported one by one and the run goes on; the exit status is non-zero if any failed.
#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Class names, comma-separated ("cat,dog"), or @FILE with one name per line.
    #[arg(long, value_name = "NAMES|@FILE")]
    classes: String,
    /// Prompt template; `{}` is replaced by the class name.
    #[arg(long, default_value = "a photo of a {}.", conflicts_with = "ensemble")]
    template: String,
    /// Average the text embeddings of every template of a dataset's template groups
    /// (built-in table, or --templates-file) instead of using one template.
    #[arg(long, value_name = "DATASET", num_args = 0..=1, default_missing_value = "imagenet")]
    ensemble: Option<String>,
    /// A template-groups TOML file (same format as assets/template-groups.toml) for --ensemble.
    #[arg(long, value_name = "FILE", requires = "ensemble")]
    templates_file: Option<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print one JSON object per image instead of a table.
    #[arg(long)]
    json: bool,
    /// Classify with the prompts of a run made by `mocoop train` (MoCoOp, CoOp or zero-shot; its
    /// text features are computed once) instead of hand-written templates. --weights must be the
    /// CLIP the run was trained with.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["ensemble", "template"])]
    prompts: Option<PathBuf>,
    /// Image files or directories (walked recursively for .jpg/.jpeg/.png/.webp/.bmp).
    #[arg(required = true, value_name = "IMAGE_OR_DIR")]
    inputs: Vec<PathBuf>,
}

impl ClassifyArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &crate::device::DeviceSpec {
        &self.model.device
    }

    fn class_names(&self) -> Result<Vec<String>> {
        let names = parse_class_names(&self.classes)?;
        if names.len() < 2 {
            bail!("need at least two class names, got {}", names.len());
        }
        Ok(names)
    }

    fn templates(&self) -> Result<Vec<String>> {
        let Some(dataset) = &self.ensemble else {
            if self.template.matches("{}").count() != 1 {
                bail!(
                    "--template must contain exactly one '{{}}': '{}'",
                    self.template
                );
            }
            return Ok(vec![self.template.clone()]);
        };
        let table = match &self.templates_file {
            Some(path) => TemplateTable::from_file(path)?,
            None => TemplateTable::builtin(),
        };
        Ok(table
            .groups(dataset)?
            .all_templates()
            .map(String::from)
            .collect())
    }
}

/// Zero-shot classifier weights: per class, the normalised mean of its templates' normalised text
/// embeddings (CLIP's prompt ensembling), `[classes, D]`.
fn class_embeddings<B: Backend>(
    model: &LoadedClip<B>,
    classes: &[String],
    templates: &[String],
    device: &B::Device,
) -> Tensor<B, 2> {
    let per_class: Vec<Tensor<B, 2>> = classes
        .iter()
        .map(|class| {
            let prompts: Vec<String> = templates.iter().map(|t| fill(t, class)).collect();
            model.encode_texts(&prompts, device).mean_dim(0)
        })
        .collect();
    l2_normalize(Tensor::cat(per_class, 0))
}

/// Every image file named, directories walked recursively in sorted order.
fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading directory {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", dir.display()))?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files)?;
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

impl OnBackend for ClassifyArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let classes = self.class_names()?;
        let templates = self.templates()?;
        let files = collect_inputs(&self.inputs)?;
        if files.is_empty() {
            bail!("no images found in the given inputs");
        }
        let model = self.model.load::<B::InnerBackend>(&device)?;
        let size = model.clip.config().vision.image_size;
        let transform = model.clip.config().preprocess;
        let loaded;
        let classifier: Box<dyn ImageClassifier<B::InnerBackend> + '_> = match &self.prompts {
            None => {
                let weights = class_embeddings(&model, &classes, &templates, &device);
                let text = PromptClassifier::zero_shot(weights, model.clip.logit_scale());
                Box::new(TextCachedClassifier::new(&model.clip, text))
            }
            Some(run_dir) => {
                loaded = TrainedRun::load(run_dir, model.clip, &model.tokenizer, None, &device)
                    .with_context(|| format!("loading run {}", run_dir.display()))?;
                let dataset = &loaded.config.data.dataset;
                loaded.classifier(&model.tokenizer, &classes, dataset, &device)?
            }
        };
        let top_k = self.top_k.clamp(1, classes.len());
        let progress = indicatif::ProgressBar::new(files.len() as u64);
        let mut failed = 0usize;
        let mut table = Vec::new();
        for chunk in files.chunks(BATCH) {
            let mut ok_files = Vec::new();
            let mut pixels = Vec::new();
            for path in chunk {
                match load_rgb(path).map(|image| transform.apply(&image, size as u32)) {
                    Ok(p) => {
                        ok_files.push(path);
                        pixels.push(p);
                    }
                    Err(e) => {
                        failed += 1;
                        if self.json {
                            println!("{}", json!({"image": path, "error": format!("{e:#}")}));
                        } else {
                            progress.suspend(|| eprintln!("error: {e:#}"));
                        }
                    }
                }
            }
            progress.inc(chunk.len() as u64);
            if pixels.is_empty() {
                continue;
            }
            let images = batch_tensor::<B::InnerBackend>(&pixels, size, &device);
            let logits = classifier.predict(images).logits;
            let probs = to_rows(softmax(logits.clone(), 1))?;
            let logits = to_rows(logits)?;
            for ((path, probs), logits) in ok_files.into_iter().zip(probs).zip(logits) {
                let ranked = top_classes(&probs, top_k);
                if self.json {
                    let predictions: Vec<_> = ranked
                        .iter()
                        .map(
                            |&c| json!({"class": classes[c], "prob": probs[c], "logit": logits[c]}),
                        )
                        .collect();
                    println!("{}", json!({"image": path, "predictions": predictions}));
                } else {
                    let cells: Vec<String> = ranked
                        .iter()
                        .map(|&c| format!("{} {:.3}", classes[c], probs[c]))
                        .collect();
                    table.push((path.display().to_string(), cells));
                }
            }
        }
        progress.finish_and_clear();
        if !self.json {
            print_table(&table, top_k);
        }
        if failed > 0 {
            bail!("{failed} of {} images could not be read", files.len());
        }
        Ok(())
    }
}

/// Indices of the `k` largest values, largest first.
fn top_classes(probs: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order.truncate(k);
    order
}

fn print_table(rows: &[(String, Vec<String>)], top_k: usize) {
    let width = rows.iter().map(|(p, _)| p.len()).max().unwrap_or(5).max(5);
    let cell = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(String::len))
        .max()
        .unwrap_or(6)
        .max(6);
    let header: Vec<String> = (1..=top_k)
        .map(|i| format!("{:<cell$}", format!("top-{i}")))
        .collect();
    println!("{:<width$}  {}", "image", header.join("  "));
    for (path, cells) in rows {
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:<cell$}")).collect();
        println!("{path:<width$}  {}", cells.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_orders_by_probability() {
        assert_eq!(top_classes(&[0.1, 0.6, 0.3], 2), vec![1, 2]);
    }
}
