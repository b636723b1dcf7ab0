//! Deep prompts on both towers: VPT-deep (Jia et al., 2022: visual tokens of their own at every
//! image layer, the text side the frozen hand-made prompt), IVLP (Khattak et al., 2023: such
//! tokens on both towers, independently), MaPLe (Khattak et al., 2023: language tokens, and
//! visual tokens made from them by one linear layer per depth) and PromptSRC (Khattak et al.,
//! 2023: IVLP's tokens with the self-regulating terms of `promptsrc.rs` and the epochs' aggregate
//! of `gpa.rs`). The loss of the first three is the cross-entropy alone. The text side does not
//! depend on the image, so a class set's text features are computed once at inference; the image
//! side runs with the learned tokens on every batch, and its graph is kept in training (the
//! encoder's weights stay frozen).

mod gpa;
mod prompts;
mod promptsrc;

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, Module, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::clip::l2_normalize;
use mocoop_model::tokenizer::ClipTokenizer;

pub use gpa::{Gpa, epoch_weights};
pub use prompts::{ClassText, TowerPrompts};
pub use promptsrc::{Regulation, ensemble_features, templates};

use crate::TrainError;
use crate::config::{DeepPromptConfig, TrainConfig};
use crate::learner::{
    ImageClassifier, LearnerSetup, LossTerm, Prediction, PromptLearner, TrainedLearner,
};
use crate::model::{StepState, StepTerms};
use crate::step::{StepOutput, Update, backward_once, host_output, sgd_update};

/// The run's deep prompts, or an error for a configuration without them.
fn deep_config(config: &TrainConfig) -> Result<&DeepPromptConfig, TrainError> {
    config.deep.as_ref().ok_or_else(|| {
        TrainError::Config(format!(
            "a {} run needs its deep prompt settings (`deep` in config.json)",
            config.method
        ))
    })
}

/// Normalised image features `[N, D]`: images through the image encoder with the visual tokens
/// of `prompts`.
fn image_features<B: Backend>(
    clip: &Clip<B>,
    prompts: &TowerPrompts<B>,
    images: Tensor<B, 4>,
) -> Tensor<B, 2> {
    l2_normalize(clip.vision.forward_prompted(images, &prompts.visual()))
}

/// Per-run settings that are not tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepSettings {
    /// `exp(logit_scale)`.
    pub scale: f32,
    /// Global gradient-norm clipping threshold.
    pub clip_norm: Option<f32>,
    /// The words of the hand-made prompt `"{ctx_init} {}."` of a run without a language context.
    pub ctx_init: String,
}

/// The trainable model of VPT, IVLP, MaPLe and PromptSRC: frozen CLIP, the learned tokens, the
/// fixed text side of the training classes, and PromptSRC's regulation.
#[derive(Module, Debug)]
pub struct DeepModel<B: Backend> {
    /// CLIP, frozen.
    pub clip: Clip<B>,
    /// What learns.
    pub prompts: TowerPrompts<B>,
    /// The training classes' fixed text side.
    pub classes: ClassText<B>,
    /// PromptSRC's frozen targets, weights and aggregate (`None` for the other methods).
    pub regulation: Option<Regulation<B>>,
    /// Settings.
    #[module(skip)]
    pub settings: DeepSettings,
    /// Where training stands.
    #[module(skip)]
    pub state: StepState,
}

impl<B: Backend> DeepModel<B> {
    /// The step's terms for a batch: logits and the cross-entropy, and PromptSRC's terms.
    pub fn forward(&self, images: Tensor<B, 4>, labels: Tensor<B, 1, Int>) -> StepTerms<B> {
        let scale = self.settings.scale;
        let z = self.prompts.text_features(&self.clip.text, &self.classes);
        let f = image_features(&self.clip, &self.prompts, images.clone());
        let logits = f.clone().matmul(z.clone().transpose()) * scale;
        let terms = StepTerms::cross_entropy(logits, labels);
        match &self.regulation {
            Some(regulation) => regulation.regulate(terms, &self.clip, images, z, f, scale),
            None => terms,
        }
    }

    /// The tokens the run keeps: the epochs' aggregate once the last epoch has ended (PromptSRC),
    /// otherwise the tokens as trained.
    fn kept_prompts(&self) -> TowerPrompts<B> {
        let aggregate = self
            .regulation
            .as_ref()
            .and_then(|r| r.gpa.aggregate(self.state.steps));
        let Some(mut aggregate) = aggregate else {
            return self.prompts.clone();
        };
        let device = self.prompts.devices().remove(0);
        self.prompts
            .clone()
            .load(&mut aggregate, &device)
            .expect("the aggregate holds every learned tensor")
    }
}

impl<B: AutodiffBackend> DeepModel<B> {
    /// Forward, read-back and backward of one training step; `None` gradients when the loss is
    /// not finite.
    pub fn train_step(&self, batch: ImageBatch<B>) -> (StepOutput, Option<GradientsParams>) {
        let terms = self.forward(batch.images, batch.labels.clone());
        backward_once(
            self,
            terms,
            batch.labels,
            batch.share,
            self.state.loss_scale,
        )
    }
}

impl<B: AutodiffBackend> TrainStep for DeepModel<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<StepOutput> {
        let (item, grads) = self.train_step(batch);
        TrainOutput {
            grads: grads.unwrap_or_default(),
            item,
        }
    }

    fn optimize<BB, O>(self, optim: &mut O, lr: f64, grads: GradientsParams) -> Self
    where
        BB: AutodiffBackend,
        O: Optimizer<Self, BB>,
        Self: AutodiffModule<BB>,
    {
        let update = Update::plain(self.prompts.ids_by_rank(), self.settings.clip_norm);
        let state = self.state;
        let (mut model, state) = sgd_update(self, state, optim, lr, grads, update);
        model.state = state;
        if let Some(regulation) = &mut model.regulation {
            let prompts = &model.prompts;
            regulation.gpa.after_step(state.steps, || prompts.tensors());
        }
        model
    }
}

impl<B: Backend> InferenceStep for DeepModel<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput {
        let terms = self.forward(batch.images, batch.labels.clone());
        host_output(&terms, batch.labels, 1)
    }
}

impl<B: AutodiffBackend> PromptLearner<B> for DeepModel<B> {
    fn build(setup: LearnerSetup<'_, B>) -> Result<Self, TrainError> {
        let config = setup.config;
        let deep = deep_config(config)?;
        if config.ln_tuning {
            return Err(TrainError::Config(format!(
                "{} learns prompts, not the image LayerNorms: pass --ln-tuning false",
                config.method
            )));
        }
        let clip = setup.clip.no_grad();
        let prompts =
            TowerPrompts::new(deep, &clip, setup.tokenizer, config.data.seed, setup.device)?;
        let classes = prompts.class_text(
            &clip,
            setup.tokenizer,
            &deep.ctx_init,
            &setup.classes.train,
            setup.device,
        )?;
        let regulation = deep.self_regulation.map(|weights| {
            let names = prompts.tensors();
            let classnames = &setup.classes.train;
            let epochs = config.optim.epochs;
            Regulation::new(
                weights,
                epochs,
                &clip,
                setup.tokenizer,
                classnames,
                &names,
                setup.device,
            )
        });
        let state = StepState::start(config.precision);
        Ok(Self {
            settings: DeepSettings {
                scale: clip.logit_scale().exp(),
                clip_norm: config.optim.clip_norm,
                ctx_init: deep.ctx_init.clone(),
            },
            clip,
            prompts,
            classes,
            regulation,
            state,
        })
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        let mut tensors = self.prompts.tensors();
        if let Some(regulation) = &self.regulation {
            tensors.extend(regulation.gpa.tensors());
        }
        tensors
    }

    fn param_ids(&self) -> Vec<(String, ParamId)> {
        self.prompts.param_ids()
    }

    fn load_tensors(
        mut self,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        self.prompts = self.prompts.load(tensors, device)?;
        if let Some(regulation) = &mut self.regulation {
            regulation.gpa.load(tensors)?;
        }
        Ok(self)
    }

    fn set_steps_per_epoch(&mut self, steps: usize) {
        if let Some(regulation) = &mut self.regulation {
            regulation.gpa.set_steps_per_epoch(steps);
        }
    }

    fn state(&self) -> StepState {
        self.state
    }

    fn set_state(&mut self, state: StepState) {
        self.state = state;
    }

    fn loss_terms(&self) -> Vec<LossTerm> {
        match self.regulation {
            Some(_) => promptsrc::TERMS.to_vec(),
            None => Vec::new(),
        }
    }

    fn routed_experts(&self) -> Option<usize> {
        None
    }

    fn clip(&self) -> &Clip<B> {
        &self.clip
    }

    fn use_cached_features(&mut self) -> Result<(), TrainError> {
        Err(TrainError::Config(
            "deep prompts change the image features every step: --cached-views does not apply"
                .into(),
        ))
    }

    fn split_text_by_class(&mut self, _devices: &[B::Device]) -> Result<String, TrainError> {
        Err(TrainError::Config(
            "deep prompts run both towers on the first device: --split classes does not apply \
             (use --split batch)"
                .into(),
        ))
    }

    fn into_trained(model: Self::InnerModule) -> Box<dyn TrainedLearner<B::InnerBackend>> {
        Box::new(DeepRun {
            prompts: model.kept_prompts(),
            clip: model.clip,
            ctx_init: model.settings.ctx_init,
        })
    }
}

/// A trained VPT, IVLP, MaPLe or PromptSRC run at inference (PromptSRC's tokens the aggregate).
#[derive(Debug)]
pub struct DeepRun<B: Backend> {
    /// CLIP.
    pub clip: Clip<B>,
    /// The learned tokens.
    pub prompts: TowerPrompts<B>,
    /// The words of the hand-made prompt `"{ctx_init} {}."` of a run without a language context.
    pub ctx_init: String,
}

impl<B: Backend> DeepRun<B> {
    /// The run of `config` with the tensors of its checkpoint, each taken out of `tensors`, on
    /// `clip`.
    pub fn load(
        config: &TrainConfig,
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let deep = deep_config(config)?;
        if deep.self_regulation.is_some() {
            // A run stopped by a non-finite loss keeps its last epoch checkpoint, aggregate and
            // all: its prompts are those trained so far.
            tensors.retain(|name, _| !name.starts_with(gpa::PREFIX));
        }
        let prompts =
            TowerPrompts::new(deep, &clip, tokenizer, 0, device)?.load(tensors, device)?;
        Ok(Self {
            clip,
            prompts,
            ctx_init: deep.ctx_init.clone(),
        })
    }
}

impl<B: Backend> TrainedLearner<B> for DeepRun<B> {
    fn clip(&self) -> &Clip<B> {
        &self.clip
    }

    fn classifier(
        &self,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        _dataset: &str,
        device: &B::Device,
    ) -> Result<Box<dyn ImageClassifier<B> + '_>, TrainError> {
        let classes =
            self.prompts
                .class_text(&self.clip, tokenizer, &self.ctx_init, classnames, device)?;
        let z = self.prompts.text_features(&self.clip.text, &classes);
        Ok(Box::new(DeepClassifier { run: self, z }))
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        self.prompts.tensors()
    }
}

/// The classifier of a deep-prompt run over one class set: its text features computed once.
struct DeepClassifier<'a, B: Backend> {
    run: &'a DeepRun<B>,
    z: Tensor<B, 2>,
}

impl<B: Backend> ImageClassifier<B> for DeepClassifier<'_, B> {
    fn predict(&self, images: Tensor<B, 4>) -> Prediction<B> {
        let clip = &self.run.clip;
        let scale = clip.logit_scale().exp();
        let f = image_features(clip, &self.run.prompts, images);
        Prediction {
            logits: f.matmul(self.z.clone().transpose()) * scale,
            gates: None,
        }
    }

    fn experts(&self) -> usize {
        1
    }
}
