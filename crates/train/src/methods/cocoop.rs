//! CoCoOp (Zhou et al., 2022): CoOp's context shifted per image by a small meta-net of the image
//! feature, `ctx_n = ctx + π(f_n)`, so that every image has its own prompts (`N × C` per step).
//! Its loss is the cross-entropy alone. Nothing of the text side can be cached for a class set:
//! its classifier encodes each batch's `N × C` prompts, cut at the EOT and bucketed by length as
//! every prompt here is.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, Module, ParamId};
use burn::nn::{Linear, Relu};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::clip::{TextEncoder, l2_normalize};
use mocoop_model::prompt::{ClassPrompts, MixtureOfPrompts, seeded_linear};
use mocoop_model::tokenizer::ClipTokenizer;

use super::mixture::TEXT_CHUNK;
use super::named::{ParamRef, ids_by_rank, linear_params, take_linear};
use crate::TrainError;
use crate::config::TrainConfig;
use crate::learner::{
    ImageClassifier, LearnerSetup, LossTerm, Prediction, PromptLearner, TrainedLearner,
};
use crate::model::{StepState, StepTerms};
use crate::step::{
    StepOutput, Update, backward_once, frozen_image_features, host_output, sgd_update,
};

/// The meta-net `π`: `Linear(D, D/16) → ReLU → Linear(D/16, width)`, from the image feature to
/// one token added to every context vector.
#[derive(Module, Debug)]
pub struct MetaNet<B: Backend> {
    /// `[D] → [D/16]`.
    pub linear1: Linear<B>,
    /// `[D/16] → [width]`.
    pub linear2: Linear<B>,
}

impl<B: Backend> MetaNet<B> {
    /// A meta-net from image features of width `d` to tokens of width `width`, initialised as
    /// PyTorch's `nn.Linear` layers are (seeded).
    pub fn new(d: usize, width: usize, seed: u64, device: &B::Device) -> Self {
        let hidden = (d / 16).max(1);
        Self {
            linear1: seeded_linear(d, hidden, seed ^ 0x6d65_7461, device),
            linear2: seeded_linear(hidden, width, seed ^ 0x6e65_7432, device),
        }
    }

    /// `π(f)` `[N, width]` for image features `[N, D]`.
    pub fn forward(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear2.forward(Relu.forward(self.linear1.forward(f)))
    }

    /// Its tensors by checkpoint name, in Burn's `[in, out]` layout.
    fn params(&self) -> Vec<(String, ParamRef<'_, B>)> {
        let mut params: Vec<_> = linear_params("meta_net.linear1", &self.linear1).into();
        params.extend(linear_params("meta_net.linear2", &self.linear2));
        params
    }

    /// The meta-net with the tensors of a checkpoint, each taken out of `saved`.
    fn load(
        self,
        saved: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            linear1: take_linear(saved, "meta_net.linear1", &self.linear1, device)?,
            linear2: take_linear(saved, "meta_net.linear2", &self.linear2, device)?,
        })
    }
}

/// Logits `[N, C]` of image features `f` `[N, D]` against each image's own prompts: the context
/// table of `mixture` (one expert) shifted by `π(f_n)` at its context rows, every class of
/// `prompts` encoded per image, `scale · <f_n, z[n, c]>`.
fn conditioned_logits<B: Backend>(
    text: &TextEncoder<B>,
    mixture: &MixtureOfPrompts<B>,
    meta_net: &MetaNet<B>,
    prompts: &ClassPrompts<B>,
    f: Tensor<B, 2>,
    scale: f32,
) -> Tensor<B, 2> {
    let [n, d] = f.dims();
    let device = f.device();
    let table = mixture.pool.table(&device); // [1 + n_ctx, width]: a zero row, then the context
    let [t, width] = table.dims();
    let rows: Vec<f32> = (0..t).map(|r| if r == 0 { 0.0 } else { 1.0 }).collect();
    let at_context = Tensor::<B, 1>::from_data(TensorData::new(rows, [t]), &device);
    let shift = meta_net.forward(f.clone()).reshape([n, 1, width]) * at_context.reshape([1, t, 1]);
    let tables = table.unsqueeze_dim::<3>(0) + shift;
    let z = prompts.encode_per_table(text, tables, TEXT_CHUNK);
    let c = z.dims()[1];
    let z = l2_normalize(z.reshape([n * c, d])).reshape([n, c, d]);
    (z * f.reshape([n, 1, d])).sum_dim(2).reshape([n, c]) * scale
}

/// Per-run settings that are not tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoopSettings {
    /// `exp(logit_scale)`.
    pub scale: f32,
    /// Global gradient-norm clipping threshold.
    pub clip_norm: Option<f32>,
    /// Training batches carry cached image features (`[N, D, 1, 1]`) instead of images.
    pub cached_features: bool,
}

/// CoCoOp's trainable model: frozen CLIP, the context (a one-expert mixture, `ctx.0`), the
/// meta-net, and the fixed part of the training classes' prompts.
#[derive(Module, Debug)]
pub struct CocoopModel<B: Backend> {
    /// CLIP, frozen.
    pub clip: Clip<B>,
    /// The context, as CoOp's one-expert mixture.
    pub mixture: MixtureOfPrompts<B>,
    /// The meta-net.
    pub meta_net: MetaNet<B>,
    /// The fixed part of the training classes' prompts.
    pub prompts: ClassPrompts<B>,
    /// Settings.
    #[module(skip)]
    pub settings: CocoopSettings,
    /// Where training stands.
    #[module(skip)]
    pub state: StepState,
}

impl<B: Backend> CocoopModel<B> {
    /// The step's terms for normalised image features `f`: logits and the cross-entropy.
    pub fn forward_features(&self, f: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> StepTerms<B> {
        let logits = conditioned_logits(
            &self.clip.text,
            &self.mixture,
            &self.meta_net,
            &self.prompts,
            f,
            self.settings.scale,
        );
        StepTerms::cross_entropy(logits, labels)
    }

    /// The normalised image features of a batch: encoded, or, when training on cached features,
    /// the batch itself.
    fn image_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        if self.settings.cached_features {
            let [n, d, _, _] = images.dims();
            images.reshape([n, d])
        } else {
            l2_normalize(self.clip.vision.forward(images))
        }
    }

    /// Trainable parameter ids by rank.
    fn trainable_ids(&self) -> (Vec<ParamId>, Vec<ParamId>) {
        let (one, meta_two) = ids_by_rank(&self.meta_net.params());
        let mut two: Vec<ParamId> = self
            .mixture
            .param_ids()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        two.extend(meta_two);
        (one, two)
    }
}

/// The trainable tensors of a context and meta-net, by checkpoint name.
fn cocoop_tensors<B: Backend>(
    mixture: &MixtureOfPrompts<B>,
    meta_net: &MetaNet<B>,
) -> Vec<(String, TensorData)> {
    let mut out = mixture.tensors();
    out.extend(
        meta_net
            .params()
            .iter()
            .map(|(name, p)| (name.clone(), p.data())),
    );
    out
}

impl<B: AutodiffBackend> CocoopModel<B> {
    /// Forward, read-back and backward of one training step; `None` gradients when the loss is
    /// not finite. The image encoder is frozen (it runs without a graph).
    pub fn train_step(&self, batch: ImageBatch<B>) -> (StepOutput, Option<GradientsParams>) {
        let f = if self.settings.cached_features {
            self.image_features(batch.images)
        } else {
            frozen_image_features(&self.clip.vision, batch.images)
        };
        let terms = self.forward_features(f, batch.labels.clone());
        backward_once(
            self,
            terms,
            batch.labels,
            batch.share,
            self.state.loss_scale,
        )
    }
}

impl<B: AutodiffBackend> TrainStep for CocoopModel<B> {
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
        let update = Update::plain(self.trainable_ids(), self.settings.clip_norm);
        let state = self.state;
        let (mut model, state) = sgd_update(self, state, optim, lr, grads, update);
        model.state = state;
        model
    }
}

impl<B: Backend> InferenceStep for CocoopModel<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput {
        let f = self.image_features(batch.images);
        let terms = self.forward_features(f, batch.labels.clone());
        host_output(&terms, batch.labels, 1)
    }
}

impl<B: AutodiffBackend> PromptLearner<B> for CocoopModel<B> {
    fn build(setup: LearnerSetup<'_, B>) -> Result<Self, TrainError> {
        let config = setup.config;
        let clip = setup.clip.no_grad();
        let mixture =
            MixtureOfPrompts::new(config.mixture.clone(), &clip, setup.tokenizer, setup.device)?;
        let meta_net = MetaNet::new(
            clip.config().embed_dim,
            clip.text.width(),
            config.mixture.seed,
            setup.device,
        );
        let prompts = mixture.class_prompts(
            &clip.text,
            setup.tokenizer,
            &setup.classes.train,
            setup.device,
        )?;
        let state = StepState::start(config.precision);
        Ok(Self {
            settings: CocoopSettings {
                scale: clip.logit_scale().exp(),
                clip_norm: config.optim.clip_norm,
                cached_features: false,
            },
            clip,
            mixture,
            meta_net,
            prompts,
            state,
        })
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        cocoop_tensors(&self.mixture, &self.meta_net)
    }

    fn param_ids(&self) -> Vec<(String, ParamId)> {
        let mut ids = self.mixture.param_ids();
        ids.extend(
            self.meta_net
                .params()
                .iter()
                .map(|(name, p)| (name.clone(), p.id())),
        );
        ids
    }

    fn load_tensors(
        mut self,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        self.meta_net = self.meta_net.load(tensors, device)?;
        self.mixture = self
            .mixture
            .load_tensors(tensors, device)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        Ok(self)
    }

    fn state(&self) -> StepState {
        self.state
    }

    fn set_state(&mut self, state: StepState) {
        self.state = state;
    }

    fn loss_terms(&self) -> Vec<LossTerm> {
        Vec::new()
    }

    fn routed_experts(&self) -> Option<usize> {
        None
    }

    fn clip(&self) -> &Clip<B> {
        &self.clip
    }

    fn use_cached_features(&mut self) -> Result<(), TrainError> {
        self.settings.cached_features = true;
        Ok(())
    }

    fn split_text_by_class(&mut self, _devices: &[B::Device]) -> Result<String, TrainError> {
        Err(TrainError::Config(
            "CoCoOp encodes each image's own prompts: --split classes does not apply (use \
             --split batch)"
                .into(),
        ))
    }

    fn into_trained(model: Self::InnerModule) -> Box<dyn TrainedLearner<B::InnerBackend>> {
        Box::new(CocoopRun {
            clip: model.clip,
            mixture: model.mixture,
            meta_net: model.meta_net,
        })
    }
}

/// A trained CoCoOp run at inference.
#[derive(Debug)]
pub struct CocoopRun<B: Backend> {
    /// CLIP.
    pub clip: Clip<B>,
    /// The trained context.
    pub mixture: MixtureOfPrompts<B>,
    /// The trained meta-net.
    pub meta_net: MetaNet<B>,
}

impl<B: Backend> CocoopRun<B> {
    /// The run of `config` with the trainable tensors of its checkpoint, each taken out of
    /// `tensors`, on `clip`.
    pub fn load(
        config: &TrainConfig,
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let mixture = MixtureOfPrompts::new(config.mixture.clone(), &clip, tokenizer, device)?
            .load_tensors(tensors, device)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let meta_net = MetaNet::new(clip.config().embed_dim, clip.text.width(), 0, device)
            .load(tensors, device)?;
        Ok(Self {
            clip,
            mixture,
            meta_net,
        })
    }
}

impl<B: Backend> TrainedLearner<B> for CocoopRun<B> {
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
        let prompts = self
            .mixture
            .class_prompts(&self.clip.text, tokenizer, classnames, device)?;
        Ok(Box::new(ConditionedClassifier { run: self, prompts }))
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        cocoop_tensors(&self.mixture, &self.meta_net)
    }
}

/// CoCoOp's classifier over one class set: per batch, each image's prompts are encoded.
struct ConditionedClassifier<'a, B: Backend> {
    run: &'a CocoopRun<B>,
    prompts: ClassPrompts<B>,
}

impl<B: Backend> ImageClassifier<B> for ConditionedClassifier<'_, B> {
    fn predict(&self, images: Tensor<B, 4>) -> Prediction<B> {
        let clip = &self.run.clip;
        let f = clip.encode_image(images);
        let scale = clip.logit_scale().exp();
        let logits = conditioned_logits(
            &clip.text,
            &self.run.mixture,
            &self.run.meta_net,
            &self.prompts,
            f,
            scale,
        );
        Prediction {
            logits,
            gates: None,
        }
    }

    fn experts(&self) -> usize {
        1
    }
}
