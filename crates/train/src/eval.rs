//! Evaluation of runs: trained mixtures, CoOp and zero-shot CLIP through one code path (a
//! [`PromptClassifier`] with every text feature cached, then the image encoder per batch).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use mocoop_data::{
    Dataset, Item, Loader, LoaderConfig, Subsample, load_dataset, subsample_classes,
};
use mocoop_model::Clip;
use mocoop_model::prompt::{HardPrompts, MixtureOfPrompts, PromptClassifier};
use mocoop_model::templates::{TemplateGroups, TemplateTable};
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{DataConfig, Method, Setting, TrainConfig, ZeroShotPrompts};
use crate::run::{self, RunResults, SplitResult};
use crate::{TrainError, checkpoint, losses, resume};

/// Prompts are encoded this many at a time at inference.
pub const TEXT_CHUNK: usize = 1024;

/// The template groups for `dataset`: from `groups_file` when given (its section for the
/// dataset, or its only section), else from the built-in table.
pub fn template_groups(
    groups_file: Option<&Path>,
    dataset: &str,
) -> Result<TemplateGroups, TrainError> {
    let table = match groups_file {
        Some(path) => TemplateTable::from_file(path),
        None => Ok(TemplateTable::builtin()),
    }
    .map_err(|e| TrainError::Config(e.to_string()))?;
    let names: Vec<String> = table.datasets().map(str::to_string).collect();
    let key = if groups_file.is_some() && names.len() == 1 && !names.contains(&dataset.to_string())
    {
        names[0].clone()
    } else {
        dataset.to_string()
    };
    table.groups(&key).map_err(|e| {
        let hint = if groups_file.is_none() {
            " (pass --groups FILE with template groups for this dataset)"
        } else {
            ""
        };
        TrainError::Config(format!("{e}{hint}"))
    })
}

/// The training data of a run: its few-shot subset, cut to the base classes in base-to-new.
/// Returns the dataset and a note for the user, if any.
pub fn training_data(data: &DataConfig) -> Result<(Dataset, Option<String>), TrainError> {
    let full = load_dataset(&data.dataset, &data.root)?;
    let few = mocoop_data::few_shot(&full, data.shots, data.seed)?;
    let dataset = match data.setting {
        Setting::Base2new => subsample_classes(&few.dataset, Subsample::Base),
        Setting::Fewshot => few.dataset,
    };
    Ok((dataset, few.note))
}

/// A run ready for inference: CLIP (with the run's image LayerNorms) and its prompts.
#[derive(Debug)]
pub struct TrainedRun<B: Backend> {
    /// The run's configuration.
    pub config: TrainConfig,
    /// CLIP, with the trained image LayerNorms when the run tuned them.
    pub clip: Clip<B>,
    /// The trained mixture (`None` for zero-shot runs).
    pub mixture: Option<MixtureOfPrompts<B>>,
    /// The run directory.
    pub dir: PathBuf,
}

impl<B: Backend> TrainedRun<B> {
    /// Loads `run`'s configuration and checkpoint onto `clip` (the CLIP the run was trained
    /// with). With `expected`, a run of another method is an error.
    pub fn load(
        run_dir: &Path,
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        expected: Option<Method>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let config = run::read_config(run_dir, expected)?;
        let clip = clip.with_precision(config.precision);
        if config.method == Method::ZeroShot {
            return Ok(Self {
                config,
                clip,
                mixture: None,
                dir: run_dir.to_path_buf(),
            });
        }
        let (path, mut ckpt) = final_checkpoint(run_dir, &config)?;
        let method = ckpt.metadata.get("method").cloned().unwrap_or_default();
        if method != config.method.to_string() {
            return Err(TrainError::Run(format!(
                "{}: the checkpoint is from a {method} run but config.json describes a {} run",
                path.display(),
                config.method
            )));
        }
        let mixture = MixtureOfPrompts::new(config.mixture.clone(), &clip, tokenizer, device)?;
        let mixture = mixture
            .load_tensors(&mut ckpt.tensors, device)
            .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", path.display())))?;
        let clip = if config.ln_tuning {
            checkpoint::load_visual_ln(clip, &mut ckpt.tensors, device)?
        } else {
            clip
        };
        if !ckpt.tensors.is_empty() {
            return Err(TrainError::Checkpoint(format!(
                "{}: unexpected tensors {:?} for this run's configuration",
                path.display(),
                ckpt.tensors.keys().collect::<Vec<_>>()
            )));
        }
        Ok(Self {
            config,
            clip,
            mixture: Some(mixture),
            dir: run_dir.to_path_buf(),
        })
    }

    /// The classifier over `classnames` (text features computed once). For zero-shot runs the
    /// templates come from `dataset`'s groups (ensemble) or the run's single template.
    pub fn classifier(
        &self,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        dataset: &str,
        device: &B::Device,
    ) -> Result<PromptClassifier<B>, TrainError> {
        let scale = self.clip.logit_scale();
        match &self.mixture {
            Some(mixture) => {
                let prompts =
                    mixture.class_prompts(&self.clip.text, tokenizer, classnames, device)?;
                Ok(mixture.classifier(&self.clip.text, &prompts, scale, TEXT_CHUNK))
            }
            None => {
                let groups: Vec<Vec<String>> = match &self.config.zero_shot {
                    ZeroShotPrompts::Template { template } => vec![vec![template.clone()]],
                    ZeroShotPrompts::Ensemble => {
                        template_groups(self.config.data.groups_file.as_deref(), dataset)?
                            .groups()
                            .to_vec()
                    }
                };
                let hard =
                    HardPrompts::from_groups(&self.clip, tokenizer, &groups, classnames, device)?;
                Ok(PromptClassifier::ensemble(&hard, scale))
            }
        }
    }
}

/// Top-1 accuracy of `classifier` on `items`: `(correct, total)`.
pub fn accuracy<B: Backend>(
    clip: &Clip<B>,
    classifier: &PromptClassifier<B>,
    dataset: &str,
    items: Vec<Item>,
    batch_size: usize,
    workers: usize,
    device: &B::Device,
) -> Result<(usize, usize), TrainError> {
    let size = clip.config().vision.image_size as u32;
    let config = LoaderConfig {
        workers,
        ..LoaderConfig::test(size, batch_size.max(1))
    };
    let loader = Loader::new(dataset, items, config);
    let (mut correct, mut total) = (0usize, 0usize);
    for batch in loader.epoch::<B>(0, device) {
        let batch = batch?;
        let n = batch.indices.len();
        let logits = classifier.logits(clip.encode_image(batch.images));
        let hits = losses::correct(logits, batch.labels)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("a float")[0];
        correct += hits.round() as usize;
        total += n;
    }
    Ok((correct, total))
}

/// Which classes of a dataset to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    /// The base half.
    Base,
    /// The new half.
    New,
    /// Every class.
    All,
}

impl EvalSplit {
    /// Its name in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::New => "new",
            Self::All => "all",
        }
    }

    fn subsample(self) -> Subsample {
        match self {
            Self::Base => Subsample::Base,
            Self::New => Subsample::New,
            Self::All => Subsample::All,
        }
    }
}

/// What to evaluate a run on.
#[derive(Debug, Clone)]
pub struct EvalTarget {
    /// Another dataset (name, data root) instead of the run's own.
    pub dataset: Option<(String, PathBuf)>,
    /// The classes (default: base and new for a base-to-new run on its own dataset, else all).
    pub split: Option<EvalSplit>,
    /// Images per batch.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
}

/// Evaluates a loaded run on the test split(s) of `target`.
pub fn evaluate_run<B: Backend>(
    run: &TrainedRun<B>,
    tokenizer: &ClipTokenizer,
    target: &EvalTarget,
    device: &B::Device,
) -> Result<RunResults, TrainError> {
    let own = &run.config.data;
    let (name, root) = match &target.dataset {
        Some((name, root)) => (name.clone(), root.clone()),
        None => (own.dataset.clone(), own.root.clone()),
    };
    let splits = match target.split {
        Some(split) => vec![split],
        None if target.dataset.is_none() && own.setting == Setting::Base2new => {
            vec![EvalSplit::Base, EvalSplit::New]
        }
        None => vec![EvalSplit::All],
    };
    let full = load_dataset(&name, &root)?;
    let mut results = Vec::new();
    for split in splits {
        let dataset = subsample_classes(&full, split.subsample());
        let classifier = run.classifier(tokenizer, &dataset.classnames, &name, device)?;
        let (correct, images) = accuracy(
            &run.clip,
            &classifier,
            &name,
            dataset.test.clone(),
            target.batch_size,
            target.workers,
            device,
        )?;
        results.push(SplitResult {
            dataset: name.clone(),
            split: split.as_str().to_string(),
            classes: dataset.classnames.len(),
            images,
            correct,
            accuracy: if images == 0 {
                0.0
            } else {
                100.0 * correct as f64 / images as f64
            },
        });
    }
    Ok(RunResults::new(run.config.method, results))
}

/// The final checkpoint of a finished run; when it is damaged, the last epoch's checkpoint (the same
/// tensors, kept for resuming), with a warning.
fn final_checkpoint(
    run_dir: &Path,
    config: &TrainConfig,
) -> Result<(PathBuf, checkpoint::Checkpoint), TrainError> {
    let path = run::checkpoint_path(run_dir);
    if !path.is_file() {
        return Err(TrainError::Run(format!(
            "{} has no {} (training did not finish? `mocoop train --resume {}` continues it)",
            run_dir.display(),
            run::CHECKPOINT_FILE,
            run_dir.display()
        )));
    }
    let damaged = match checkpoint::read(&path) {
        Ok(ckpt) => return Ok((path, ckpt)),
        Err(e) => e,
    };
    let scan = resume::scan(run_dir)?;
    match scan.latest {
        Some(point)
            if point.state.steps_into_epoch() == 0
                && point.state.epochs_done() == config.optim.epochs =>
        {
            eprintln!(
                "warning: {damaged}; using {} (the same tensors)",
                point.path.display()
            );
            Ok((point.path, point.checkpoint))
        }
        _ => Err(damaged),
    }
}
