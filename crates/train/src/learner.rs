//! The interface every prompt-learning method implements, so that the trainer, the loop, the
//! checkpoints, resuming, evaluation, `classify --prompts` and `bench` are written once, against
//! it, and a method is one module plus its name in the registry (`methods`).
//!
//! A method has two forms:
//! - [`PromptLearner`], the model burn-train steps (on an autodiff backend): what trains, its
//!   step (logits and named loss terms, through burn-train's `TrainStep`), how its tensors are
//!   saved and loaded, and the run-wide switches the trainer may ask of it;
//! - [`TrainedLearner`], the trained (or zero-shot) model at inference, on any backend: what it
//!   caches for a class set ([`ImageClassifier`]) and its tensors for the final checkpoint.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use burn::module::{AutodiffModule, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn::train::{InferenceStep, TrainStep};

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;

use crate::TrainError;
use crate::config::TrainConfig;
use crate::model::{ClassSetup, StepState};
use crate::step::StepOutput;

/// A loss term a method adds beside the cross-entropy: logged every step and shown by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossTerm {
    /// Its name on the progress display (`L_text`).
    pub name: &'static str,
    /// Its key in the step's values and in `metrics.jsonl` (`text`).
    pub key: &'static str,
}

/// What a method is built from for a new run.
pub struct LearnerSetup<'a, B: Backend> {
    /// The run's configuration.
    pub config: &'a TrainConfig,
    /// CLIP at the run's precision (not yet frozen).
    pub clip: Clip<B>,
    /// The tokenizer of `clip`.
    pub tokenizer: &'a ClipTokenizer,
    /// The run's template groups (hand-made prompts).
    pub groups: &'a TemplateGroups,
    /// The classes trained over, and the dataset's full list.
    pub classes: ClassSetup,
    /// Encode every expert's prompts at every step (for comparisons; the result is the same).
    pub encode_all_experts: bool,
    /// Where the model lives.
    pub device: &'a B::Device,
}

/// A method's trainable model, as the trainer and the loop see it.
///
/// The step itself is burn-train's [`TrainStep`] (forward, the named loss terms, the backward
/// pass, and in `optimize` how gradients become an update) and [`InferenceStep`] (validation).
/// Every step reports a [`StepOutput`] whose values hold `loss`, `ce`, each of
/// [`PromptLearner::loss_terms`] and `accuracy`.
pub trait PromptLearner<B: AutodiffBackend>:
    TrainStep<Input = ImageBatch<B>, Output = StepOutput>
    + AutodiffModule<
        B,
        InnerModule: InferenceStep<Input = ImageBatch<B::InnerBackend>, Output = StepOutput>,
    > + Display
    + Sized
    + 'static
{
    /// The model of a new run.
    fn build(setup: LearnerSetup<'_, B>) -> Result<Self, TrainError>;

    /// The trainable tensors by checkpoint name: what a checkpoint holds.
    fn tensors(&self) -> Vec<(String, TensorData)>;

    /// Each trainable parameter's id by checkpoint name (the optimiser state is saved by id and
    /// re-keyed by name on resume, since ids change between processes).
    fn param_ids(&self) -> Vec<(String, ParamId)>;

    /// The model with a checkpoint's trainable tensors, each taken out of `tensors`.
    fn load_tensors(
        self,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError>;

    /// Told once, before the first step, how many optimiser steps make an epoch, for a method that
    /// acts at epoch ends (PromptSRC's aggregation of the epochs' prompts); nothing by default.
    fn set_steps_per_epoch(&mut self, _steps: usize) {}

    /// Where training stands (steps taken, the f16 loss scale).
    fn state(&self) -> StepState;

    /// Sets where training stands (a resumed run).
    fn set_state(&mut self, state: StepState);

    /// The loss terms it adds beside the cross-entropy, each logged.
    fn loss_terms(&self) -> Vec<LossTerm>;

    /// How many routed experts it has (their loads and the router's entropy are logged), if any.
    fn routed_experts(&self) -> Option<usize>;

    /// CLIP as it is trained (its image size; the frozen image encoder of the feature cache).
    fn clip(&self) -> &Clip<B>;

    /// Trains on cached image features (`[N, D, 1, 1]` batches) instead of images; an error for a
    /// method whose image side depends on what it learns.
    fn use_cached_features(&mut self) -> Result<(), TrainError>;

    /// Encodes each step's prompts in shares over `devices` (the model's device first); returns a
    /// note for the user. An error for a method that cannot split its text side by class.
    fn split_text_by_class(&mut self, devices: &[B::Device]) -> Result<String, TrainError>;

    /// The inference form of a trained model.
    fn into_trained(model: Self::InnerModule) -> Box<dyn TrainedLearner<B::InnerBackend>>;
}

/// A trained (or zero-shot) method at inference: the object evaluation, `classify --prompts`
/// and the reports hold.
pub trait TrainedLearner<B: Backend>: Debug + Send {
    /// CLIP as the method uses it (with the run's image LayerNorms, if it tuned them).
    fn clip(&self) -> &Clip<B>;

    /// The classifier over `classnames`, with what can be computed once for the class set (the
    /// text features) computed here. `dataset` names the hand-made template groups of methods that
    /// use them.
    fn classifier(
        &self,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        dataset: &str,
        device: &B::Device,
    ) -> Result<Box<dyn ImageClassifier<B> + '_>, TrainError>;

    /// The trainable tensors by checkpoint name (nothing for zero-shot CLIP).
    fn tensors(&self) -> Vec<(String, TensorData)>;
}

/// What a classifier says about a batch of images.
#[derive(Debug, Clone)]
pub struct Prediction<B: Backend> {
    /// Class logits `[N, C]`.
    pub logits: Tensor<B, 2>,
    /// The experts' gates `[N, E]`, for a method with routed experts.
    pub gates: Option<Tensor<B, 2>>,
}

/// Classifies preprocessed images over one class set.
pub trait ImageClassifier<B: Backend> {
    /// The logits (and gates) of images `[N, 3, H, W]`.
    fn predict(&self, images: Tensor<B, 4>) -> Prediction<B>;

    /// How many experts its gates cover (1 without routing).
    fn experts(&self) -> usize;
}
