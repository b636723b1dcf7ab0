//! Evaluation of runs, whatever their method: a loaded run ([`TrainedRun`]) gives a classifier
//! per class set (`learner::ImageClassifier`), and accuracy is counted over a test split.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use mocoop_data::{Item, Loader, LoaderConfig, Subsample, load_dataset, subsample_classes};
use mocoop_model::Clip;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::config::{Setting, TrainConfig};
use crate::learner::{ImageClassifier, TrainedLearner};
use crate::run::{self, RunResults, SplitResult};
use crate::{TrainError, checkpoint, losses, resume};

/// A run ready for inference: its configuration and its method's trained form.
#[derive(Debug)]
pub struct TrainedRun<B: Backend> {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The trained (or zero-shot) method.
    pub learner: Box<dyn TrainedLearner<B>>,
    /// The run directory.
    pub dir: PathBuf,
}

impl<B: Backend> TrainedRun<B> {
    /// CLIP as the run uses it (with its image LayerNorms, if it tuned them).
    pub fn clip(&self) -> &Clip<B> {
        self.learner.clip()
    }

    /// The classifier over `classnames` (what the method caches computed once). `dataset` names
    /// the template groups of methods that use hand-made prompts.
    pub fn classifier(
        &self,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        dataset: &str,
        device: &B::Device,
    ) -> Result<Box<dyn ImageClassifier<B> + '_>, TrainError> {
        self.learner
            .classifier(tokenizer, classnames, dataset, device)
    }
}

/// Top-1 accuracy of `classifier` on `items` (preprocessed at `image_size`): `(correct, total)`.
pub fn accuracy<B: Backend>(
    classifier: &dyn ImageClassifier<B>,
    image_size: usize,
    dataset: &str,
    items: Vec<Item>,
    batch_size: usize,
    workers: usize,
    device: &B::Device,
) -> Result<(usize, usize), TrainError> {
    let config = LoaderConfig {
        workers,
        ..LoaderConfig::test(image_size as u32, batch_size.max(1))
    };
    let loader = Loader::new(dataset, items, config);
    let (mut correct, mut total) = (0usize, 0usize);
    for batch in loader.epoch::<B>(0, device) {
        let batch = batch?;
        let n = batch.indices.len();
        let logits = classifier.predict(batch.images).logits;
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
            classifier.as_ref(),
            run.clip().config().vision.image_size,
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
pub(crate) fn final_checkpoint(
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
