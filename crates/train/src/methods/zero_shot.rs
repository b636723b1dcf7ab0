//! Zero-shot CLIP as a method: nothing trains; a class set's classifier is the hand-made
//! prompts' text features (one template, or the ensemble of the dataset's template groups).

use std::path::PathBuf;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;

use mocoop_model::Clip;
use mocoop_model::prompt::{HardPrompts, PromptClassifier};
use mocoop_model::tokenizer::ClipTokenizer;

use super::cached::TextCachedClassifier;
use crate::TrainError;
use crate::config::{TrainConfig, ZeroShotPrompts};
use crate::inputs::template_groups;
use crate::learner::{ImageClassifier, TrainedLearner};

/// Zero-shot CLIP with the run's prompts.
#[derive(Debug)]
pub struct ZeroShotRun<B: Backend> {
    /// CLIP.
    pub clip: Clip<B>,
    /// One template, or the ensemble of the dataset's groups.
    pub prompts: ZeroShotPrompts,
    /// The run's template-groups file (the built-in table without one).
    pub groups_file: Option<PathBuf>,
}

impl<B: Backend> ZeroShotRun<B> {
    /// The zero-shot "run" of `config` on `clip`.
    pub fn new(config: &TrainConfig, clip: Clip<B>) -> Self {
        Self {
            clip,
            prompts: config.zero_shot.clone(),
            groups_file: config.data.groups_file.clone(),
        }
    }
}

impl<B: Backend> TrainedLearner<B> for ZeroShotRun<B> {
    fn clip(&self) -> &Clip<B> {
        &self.clip
    }

    fn classifier(
        &self,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        dataset: &str,
        device: &B::Device,
    ) -> Result<Box<dyn ImageClassifier<B> + '_>, TrainError> {
        let groups: Vec<Vec<String>> = match &self.prompts {
            ZeroShotPrompts::Template { template } => vec![vec![template.clone()]],
            ZeroShotPrompts::Ensemble => template_groups(self.groups_file.as_deref(), dataset)?
                .groups()
                .to_vec(),
        };
        let hard = HardPrompts::from_groups(&self.clip, tokenizer, &groups, classnames, device)?;
        let text = PromptClassifier::ensemble(&hard, self.clip.logit_scale());
        Ok(Box::new(TextCachedClassifier::new(&self.clip, text)))
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        Vec::new()
    }
}
