//! The trained model: frozen CLIP (optionally with trainable image LayerNorms), the mixture of
//! prompts, and everything a step needs that is computed once per run (the fixed part of all
//! prompts, hard-prompt prototypes, the zero-shot teacher).

use burn::module::{Module, Param, ParamId};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::RngExt;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use mocoop_model::Clip;
use mocoop_model::Precision;
use mocoop_model::clip::{index_tensor, l2_normalize};
use mocoop_model::prompt::{
    ClassPrompts, HardPrompts, MixtureConfig, MixtureOfPrompts, PromptError, TextShard,
};
use mocoop_model::tokenizer::ClipTokenizer;

use mocoop_data::augment::derived_rng;

use crate::config::{GatePrototypes, LossConfig, TextClasses, TextTarget};
use crate::loss_scale::LossScale;
use crate::losses;

/// Separates the router-noise draws from the data crate's other uses of `derived_rng`.
const NOISE_STREAM: u64 = 0x6e6f_6973;

/// The classes of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSetup {
    /// The classes the classifier is trained over (labels index these).
    pub train: Vec<String>,
    /// Every class name of the dataset (the reference set of the text loss in base-to-new; equal
    /// to `train` in the all-class setting).
    pub reference: Vec<String>,
    /// Position of each training class in `reference`.
    pub train_in_reference: Vec<usize>,
}

impl ClassSetup {
    /// Training on all classes of `classnames`.
    pub fn all(classnames: Vec<String>) -> Self {
        Self {
            train_in_reference: (0..classnames.len()).collect(),
            reference: classnames.clone(),
            train: classnames,
        }
    }
}

/// Per-step settings that are not tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSettings {
    /// Loss weights and options.
    pub loss: LossConfig,
    /// Std of the Gaussian noise added to router logits in training.
    pub router_noise: f32,
    /// `exp(logit_scale)`.
    pub scale: f32,
    /// Global gradient-norm clipping threshold.
    pub clip_norm: Option<f32>,
    /// Learning-rate multiplier of the image LayerNorms.
    pub ln_lr_scale: f64,
    /// Whether the image LayerNorms train (they are then among the saved tensors).
    #[serde(default)]
    pub ln_tuning: bool,
    /// Seed of the router noise: each image's noise is drawn on the host from this seed, the
    /// step number and the image's position in the item list, so that a resumed run, or one split
    /// across devices, draws the same noise.
    #[serde(default)]
    pub noise_seed: u64,
    /// Training batches carry cached image features (`[N, D, 1, 1]`) instead of images.
    #[serde(default)]
    pub cached_features: bool,
    /// Encode every expert's prompts each step, even when no image of the batch is routed to
    /// some (otherwise only the routed experts are encoded when nothing else needs the rest).
    #[serde(default)]
    pub encode_all_experts: bool,
    /// The warm-up learning rate, when every parameter group trains at it during the warm-up
    /// (the image LayerNorms then get it too, not `ln_lr_scale` of it; Dassl's constant warm-up).
    #[serde(default)]
    pub warmup_lr_all_groups: Option<f64>,
}

/// What the optimiser step advances, carried with the model (a value, not shared state) so that
/// every device's copy of a step sees the same: the steps taken, which seed the router noise, and
/// the dynamic loss scale of f16 training.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepState {
    /// Optimiser steps taken (a resumed run starts from its checkpoint's).
    pub steps: u64,
    /// The factor the loss is multiplied by before the backward pass, when scaling is on.
    pub loss_scale: Option<LossScale>,
}

impl StepState {
    /// A run's start: no step taken, the loss scaled when `precision` needs it (f16).
    pub fn start(precision: Precision) -> Self {
        Self {
            steps: 0,
            loss_scale: precision.needs_loss_scaling().then(LossScale::default),
        }
    }
}

/// What one forward pass produces.
#[derive(Debug, Clone)]
pub struct StepTerms<B: Backend> {
    /// Logits over the training classes `[N, C]`.
    pub logits: Tensor<B, 2>,
    /// The weighted total loss `[1]`.
    pub loss: Tensor<B, 1>,
    /// Each computed loss term, unweighted: `ce`, then `text`, `gate`, `lb`, `kd`, `kg` when
    /// their weight is positive, and ProGrad's `kl` (not part of `loss`: its gradient only steers
    /// the projection).
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
    /// Router logits `[N, E]` (with noise, in training), if there is a router.
    pub router_logits: Option<Tensor<B, 2>>,
    /// Gates `[N, E]`.
    pub gates: Tensor<B, 2>,
}

impl<B: Backend> StepTerms<B> {
    /// The terms of a method whose loss is the cross-entropy of `logits` alone, with no router
    /// (its one prompt gets every image: gates of 1).
    pub fn cross_entropy(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Self {
        let n = logits.dims()[0];
        let gates = Tensor::ones([n, 1], &logits.device());
        let ce = losses::cross_entropy(logits.clone(), labels);
        Self {
            logits,
            loss: ce.clone(),
            terms: vec![("ce", ce)],
            router_logits: None,
            gates,
        }
    }

    /// The loss term `name`, if the step computed it.
    pub fn term(&self, name: &str) -> Option<Tensor<B, 1>> {
        self.terms
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, t)| t.clone())
    }
}

/// CLIP + mixture of prompts + the per-run constants of the losses.
#[derive(Module, Debug)]
pub struct MocoopModel<B: Backend> {
    /// CLIP, frozen except (with LN tuning) the image encoder's `ln_1`/`ln_2`.
    pub clip: Clip<B>,
    /// The learnable prompts, bias and router.
    pub mixture: MixtureOfPrompts<B>,
    /// The fixed part of every prompt over the encoded classes (the reference set when the text
    /// loss contrasts all classes, else the training classes).
    pub prompts: ClassPrompts<B>,
    /// The text-level loss's own prompts (all classes, final periods kept) when they differ from
    /// the classification prompts, which then cover the training classes only (the official
    /// code's periods, in base-to-new training).
    pub text_prompts: Option<ClassPrompts<B>>,
    /// Positions of the training classes among the encoded ones (`None`: the same list).
    pub train_index: Option<Tensor<B, 1, Int>>,
    /// What `L_text` contrasts with over the encoded classes: group prototypes `[E, C_enc, D]`
    /// (MoCoOp), or every template's features `[T, C_enc, D]` (LASP).
    pub text_prototypes: Option<Tensor<B, 3>>,
    /// Prototypes of the gating target: `[E, C_train, D]`, or `[E, 1, D]` class-agnostic.
    pub gate_prototypes: Option<Tensor<B, 3>>,
    /// Zero-shot ensemble text features of the training classes `[C_train, D]` (for `L_kd`).
    pub teacher: Option<Tensor<B, 2>>,
    /// The hand-made prompt's text features of the training classes `[C_train, D]` (KgCoOp's
    /// `L_kg`, ProGrad's teacher).
    pub hand_made: Option<Tensor<B, 2>>,
    /// The other devices' shares of the prompts when the text side is split by class (empty:
    /// every prompt is encoded on the model's device); see [`Self::split_text`].
    pub text_shards: Vec<TextShard<B>>,
    /// Settings.
    #[module(skip)]
    pub settings: StepSettings,
    /// Where training stands.
    #[module(skip)]
    pub state: StepState,
}

/// Sets `require_grad` of a LayerNorm's parameters.
fn ln_require_grad<B: Backend>(mut ln: LayerNorm<B>, on: bool) -> LayerNorm<B> {
    ln.gamma = ln.gamma.set_require_grad(on);
    ln.beta = ln.beta.map(|b| b.set_require_grad(on));
    ln
}

/// The image encoder's `ln_1`/`ln_2` parameters, in block order (`gamma`, `beta` of `ln_1`, then
/// of `ln_2`).
pub fn visual_ln_params<B: Backend>(clip: &Clip<B>) -> Vec<(String, &Param<Tensor<B, 1>>)> {
    let mut out = Vec::new();
    let blocks = clip.vision.transformer().map_or(&[][..], |t| &t.blocks);
    for (i, block) in blocks.iter().enumerate() {
        for (name, ln) in [("ln_1", &block.ln_1), ("ln_2", &block.ln_2)] {
            out.push((
                format!("visual.transformer.resblocks.{i}.{name}.weight"),
                &ln.gamma,
            ));
            if let Some(beta) = &ln.beta {
                out.push((
                    format!("visual.transformer.resblocks.{i}.{name}.bias"),
                    beta,
                ));
            }
        }
    }
    out
}

/// Freezes CLIP, except the image LayerNorms when `ln_tuning`.
pub fn freeze_clip<B: Backend>(clip: Clip<B>, ln_tuning: bool) -> Clip<B> {
    let mut clip = clip.no_grad();
    if ln_tuning && let Some(transformer) = clip.vision.transformer_mut() {
        let blocks = std::mem::take(&mut transformer.blocks);
        transformer.blocks = blocks
            .into_iter()
            .map(|mut block| {
                block.ln_1 = ln_require_grad(block.ln_1, true);
                block.ln_2 = ln_require_grad(block.ln_2, true);
                block
            })
            .collect();
    }
    clip
}

impl<B: Backend> MocoopModel<B> {
    /// Builds the model: prompts for the encoded classes, hard-prompt prototypes from `groups`
    /// (one group per expert; with a single expert, all templates form one group) and the
    /// zero-shot teacher, each only when a loss needs it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        mixture: MixtureConfig,
        groups: &[Vec<String>],
        classes: &ClassSetup,
        loss: LossConfig,
        ln_tuning: bool,
        router_noise: f32,
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        let clip = freeze_clip(clip, ln_tuning);
        let mixture = MixtureOfPrompts::new(mixture, &clip, tokenizer, device)?;
        let mut model = Self::with_mixture(
            clip,
            tokenizer,
            mixture,
            groups,
            classes,
            loss,
            router_noise,
            device,
        )?;
        model.settings.ln_tuning = ln_tuning;
        Ok(model)
    }

    /// [`Self::new`] with an already built (or loaded) mixture; `clip` must already be frozen
    /// (see [`freeze_clip`]).
    #[allow(clippy::too_many_arguments)]
    pub fn with_mixture(
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        mixture: MixtureOfPrompts<B>,
        groups: &[Vec<String>],
        classes: &ClassSetup,
        loss: LossConfig,
        router_noise: f32,
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        let e = mixture.num_experts();
        let all = loss.lambda_text > 0.0 && loss.text_classes == TextClasses::All;
        let same = classes.reference == classes.train;
        let (encoded, train_positions): (&[String], Vec<usize>) = if all && !same {
            (&classes.reference, classes.train_in_reference.clone())
        } else {
            (&classes.train, (0..classes.train.len()).collect())
        };
        let own_text_prompts = all && !same && mixture.config().layout.classify_without_period;
        let (prompts, text_prompts, train_index) = if own_text_prompts {
            let text = mixture.text_loss_prompts(&clip.text, tokenizer, encoded, device)?;
            let prompts = mixture.class_prompts(&clip.text, tokenizer, &classes.train, device)?;
            (prompts, Some(text), None)
        } else {
            let prompts = mixture.class_prompts(&clip.text, tokenizer, encoded, device)?;
            let index = (all && !same).then(|| index_tensor(&train_positions, device));
            (prompts, None, index)
        };
        let needs_hard = loss.lambda_text > 0.0 || loss.lambda_gate > 0.0 || loss.lambda_kd > 0.0;
        let (mut text_prototypes, mut gate_prototypes, mut teacher) = (None, None, None);
        if needs_hard {
            let proto_groups: Vec<Vec<String>> = if groups.len() == e {
                groups.to_vec()
            } else if e == 1 {
                vec![groups.iter().flatten().cloned().collect()]
            } else if loss.lambda_text > 0.0 || loss.lambda_gate > 0.0 {
                return Err(PromptError::Config(format!(
                    "the text and gating losses need one template group per expert: {} groups \
                     for {e} experts",
                    groups.len()
                )));
            } else {
                groups.to_vec()
            };
            let hard = HardPrompts::from_groups(&clip, tokenizer, &proto_groups, encoded, device)?;
            let hard_train = hard.select_classes(&train_positions);
            if loss.lambda_text > 0.0 {
                text_prototypes = Some(match loss.text_target {
                    TextTarget::GroupPrototypes => hard.prototypes(),
                    TextTarget::Templates => hard.features.clone(),
                });
            }
            if loss.lambda_gate > 0.0 {
                gate_prototypes = Some(match loss.gate_prototypes {
                    GatePrototypes::PerClass => hard_train.prototypes(),
                    GatePrototypes::ClassAgnostic => {
                        let p = hard_train.class_agnostic_prototypes();
                        let [g, d] = p.dims();
                        p.reshape([g, 1, d])
                    }
                });
            }
            if loss.lambda_kd > 0.0 {
                teacher = Some(hard_train.ensemble());
            }
        }
        let hand_made = match loss.hand_made.as_deref() {
            Some(template) if loss.needs_hand_made() => {
                let groups = [vec![template.to_string()]];
                let hard =
                    HardPrompts::from_groups(&clip, tokenizer, &groups, &classes.train, device)?;
                Some(hard.ensemble())
            }
            _ => None,
        };
        let scale = clip.logit_scale().exp();
        Ok(Self {
            clip,
            mixture,
            prompts,
            text_prompts,
            train_index,
            text_prototypes,
            gate_prototypes,
            teacher,
            hand_made,
            text_shards: Vec::new(),
            settings: StepSettings {
                loss,
                router_noise,
                scale,
                clip_norm: Some(1.0),
                ln_lr_scale: 0.1,
                ln_tuning: false,
                noise_seed: 0,
                cached_features: false,
                encode_all_experts: false,
                warmup_lr_all_groups: None,
            },
            state: StepState::default(),
        })
    }

    /// Splits every step's prompts by class over `devices` (the model's device first): each
    /// other device gets its rows and a copy of the frozen text encoder once, here, and encodes
    /// its share every step; the features and their gradients come back to the model's device.
    /// The step's result is the one-device result. One device (or none) undoes the split.
    pub fn split_text(&mut self, devices: &[B::Device]) {
        self.text_shards = TextShard::split(&self.clip.text, &self.prompts, devices);
    }

    /// Ids of the image LayerNorm parameters (trained at the scaled learning rate).
    pub fn ln_param_ids(&self) -> Vec<ParamId> {
        visual_ln_params(&self.clip)
            .into_iter()
            .map(|(_, p)| p.id)
            .collect()
    }

    /// The router noise of training step `step` (0-based) for the images at `indices` (their
    /// positions in the item list): `[N, E]` draws of N(0, router_noise²), or `None` when the run
    /// adds no noise.
    pub fn router_noise(
        &self,
        step: u64,
        indices: &[usize],
        device: &B::Device,
    ) -> Option<Tensor<B, 2>> {
        let std = self.settings.router_noise;
        let experts = self.mixture.router.as_ref()?.weight.dims()[1];
        if std <= 0.0 {
            return None;
        }
        let mut values = Vec::with_capacity(indices.len() * experts);
        for &index in indices {
            let mut rng = derived_rng(self.settings.noise_seed, step, index as u64, NOISE_STREAM);
            values.extend((0..experts).map(|_| std * rng.sample::<f32, _>(StandardNormal)));
        }
        let data = TensorData::new(values, [indices.len(), experts]);
        Some(Tensor::from_data(data, device))
    }

    /// One forward pass with every loss term. `training` adds `noise` (from
    /// [`Self::router_noise`]) to the router logits.
    pub fn forward(
        &self,
        images: Tensor<B, 4>,
        labels: Tensor<B, 1, Int>,
        noise: Option<Tensor<B, 2>>,
        training: bool,
    ) -> StepTerms<B> {
        let f = self.image_features(images, training);
        self.forward_features(f, labels, noise, training)
    }

    /// The normalised image features `[N, D]` of a batch: encoded, or, when training on cached
    /// features, the batch itself.
    pub fn image_features(&self, images: Tensor<B, 4>, training: bool) -> Tensor<B, 2> {
        if training && self.settings.cached_features {
            let [n, d, _, _] = images.dims();
            images.reshape([n, d])
        } else {
            l2_normalize(self.clip.vision.forward(images))
        }
    }

    /// [`Self::forward`] from the batch's normalised image features `f`.
    pub fn forward_features(
        &self,
        f: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
        noise: Option<Tensor<B, 2>>,
        training: bool,
    ) -> StepTerms<B> {
        let n = labels.dims()[0];
        let device = f.device();
        let s = &self.settings;
        let l = &s.loss;
        let mut router_logits = self.mixture.router_logits(f.clone());
        if training && let Some(noise) = noise {
            router_logits = router_logits.map(|r| r + noise);
        }
        let gates = self.mixture.gates(router_logits.clone(), n, &device);
        let (z_encoded, z_text) =
            self.step_text_features(&gates, training, router_logits.is_some());
        let z = match &self.train_index {
            Some(index) => z_encoded.select(1, index.clone()),
            None => z_encoded,
        };
        let z_train = z.clone();
        let logits = self.mixture.logits(f.clone(), z, gates.clone(), s.scale);
        let ce = losses::cross_entropy(logits.clone(), labels.clone());
        let mut loss = ce.clone();
        let mut terms = vec![("ce", ce)];
        if l.lambda_text > 0.0
            && let Some(p) = &self.text_prototypes
        {
            let term = match l.text_target {
                TextTarget::GroupPrototypes => losses::text_loss(z_text, p.clone(), l.text_tau),
                TextTarget::Templates => losses::template_text_loss(z_text, p.clone(), l.text_tau),
            };
            loss = loss + term.clone() * l.lambda_text;
            terms.push(("text", term));
        }
        let top_k = self.mixture.config().top_k;
        if let Some(r) = &router_logits {
            if l.lambda_gate > 0.0
                && let Some(p) = &self.gate_prototypes
            {
                let f_target = if l.gate_target_detached {
                    f.clone().detach()
                } else {
                    f.clone()
                };
                let [e, classes, d] = p.dims();
                let a = if classes == 1 {
                    f_target.matmul(p.clone().reshape([e, d]).transpose())
                } else {
                    let p_y = p.clone().select(1, labels.clone()).swap_dims(0, 1); // [N, E, D]
                    (p_y * f_target.reshape([n, 1, d]))
                        .sum_dim(2)
                        .reshape([n, e])
                };
                let mut q = losses::gate_target(a, top_k, l.gate_target);
                if l.gate_target_detached {
                    q = q.detach();
                }
                let term = losses::gate_loss(r.clone(), q);
                loss = loss + term.clone() * l.lambda_gate;
                terms.push(("gate", term));
            }
            if l.lambda_lb > 0.0 {
                let (term, _) = losses::load_balance(r.clone(), top_k);
                loss = loss + term.clone() * l.lambda_lb;
                terms.push(("lb", term));
            }
        }
        if l.lambda_kd > 0.0
            && let Some(t) = &self.teacher
        {
            let teacher_logits = f.clone().detach().matmul(t.clone().transpose()) * s.scale;
            let term = losses::distillation(logits.clone(), teacher_logits);
            loss = loss + term.clone() * l.lambda_kd;
            terms.push(("kd", term));
        }
        for (name, term, weight) in self.hand_made_terms(&f, z_train, &logits) {
            if weight > 0.0 {
                loss = loss + term.clone() * weight;
            }
            terms.push((name, term));
        }
        StepTerms {
            logits,
            loss,
            terms,
            router_logits,
            gates,
        }
    }
}

impl<B: Backend> MocoopModel<B> {
    /// The step's text features: those of the encoded classes (`[E, C_enc, D]`, for the
    /// mixture) and those `L_text` reads. Experts no image is routed to are not encoded (zeros)
    /// when nothing reads them: without `L_text`, or when it has prompts of its own, or when it
    /// regularises only the routed experts (`text_routed_only`: they then enter it as zeros).
    fn step_text_features(
        &self,
        gates: &Tensor<B, 2>,
        training: bool,
        routed: bool,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let s = &self.settings;
        let l = &s.loss;
        let text = &self.clip.text;
        let text_needs_all =
            l.lambda_text > 0.0 && self.text_prompts.is_none() && !l.text_routed_only;
        let unused_may_skip = training && !s.encode_all_experts && routed && !text_needs_all;
        let needed = unused_may_skip.then(|| experts_in_use(gates)).flatten();
        // Split across devices, every expert is encoded: each device has a share of the rows.
        let z_encoded = if !self.text_shards.is_empty() {
            self.mixture
                .text_features_sharded(text, &self.prompts, &self.text_shards)
        } else {
            match &needed {
                Some(needed) => self.mixture.text_features_of(text, &self.prompts, needed),
                None => self.mixture.text_features(text, &self.prompts),
            }
        };
        let z_text = match (&self.text_prompts, l.text_routed_only && training && routed) {
            (None, _) => z_encoded.clone(),
            (Some(prompts), false) => self.mixture.text_features(text, prompts),
            (Some(prompts), true) => match needed.or_else(|| experts_in_use(gates)) {
                Some(needed) => self.mixture.text_features_of(text, prompts, &needed),
                None => self.mixture.text_features(text, prompts),
            },
        };
        (z_encoded, z_text)
    }

    /// The terms that compare with the hand-made prompt's features, with their weights in the
    /// loss: KgCoOp's `kg` (the training classes' text features `z` against them) and ProGrad's
    /// `kl` (weight 0: the logits against the zero-shot logits, for the projection only).
    fn hand_made_terms(
        &self,
        f: &Tensor<B, 2>,
        z: Tensor<B, 3>,
        logits: &Tensor<B, 2>,
    ) -> Vec<(&'static str, Tensor<B, 1>, f32)> {
        let Some(t) = &self.hand_made else {
            return Vec::new();
        };
        let l = &self.settings.loss;
        let mut out = Vec::new();
        if l.lambda_kg > 0.0 {
            let term = losses::knowledge_guidance(z, t.clone(), l.kg_distance);
            out.push(("kg", term, l.lambda_kg));
        }
        if let Some(p) = &l.prograd {
            let zero_shot = f.clone().detach().matmul(t.clone().transpose()) * self.settings.scale;
            let term = losses::soft_target_ce(logits.clone(), zero_shot, p.temperature);
            out.push(("kl", term, 0.0));
        }
        out
    }
}

/// Which experts some image's gate uses, when at least one is unused (`None`: all are used).
pub(crate) fn experts_in_use<B: Backend>(gates: &Tensor<B, 2>) -> Option<Vec<bool>> {
    let totals = gates
        .clone()
        .sum_dim(0)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .ok()?;
    let needed: Vec<bool> = totals.iter().map(|&t| t > 0.0).collect();
    needed.contains(&false).then_some(needed)
}
