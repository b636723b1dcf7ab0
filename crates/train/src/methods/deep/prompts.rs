//! The learned tokens of the deep-prompt methods and how they enter CLIP's two encoders: the
//! language context after SOT and its tokens for the text layers after the first; the visual
//! tokens of every image layer, learned on their own (VPT-deep, IVLP) or made from the language
//! tokens of the same depth by one linear layer per depth (MaPLe).

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::Distribution;

use mocoop_model::Clip;
use mocoop_model::clip::{DeepPrompts, TextEncoder, l2_normalize};
use mocoop_model::prompt::{
    ClassPrompts, ExpertInit, MixtureConfig, MixtureOfPrompts, seeded_linear,
};
use mocoop_model::tokenizer::ClipTokenizer;

use super::super::mixture::TEXT_CHUNK;
use super::super::named::{ParamRef, linear_params, take_linear, take_param};
use crate::TrainError;
use crate::config::DeepPromptConfig;

/// Standard deviation of the tokens drawn at random (the official code's
/// `nn.init.normal_(std=0.02)`).
const TOKEN_STD: f32 = 0.02;

/// Seed salts, one per kind of drawn tensor, so that each draws its own numbers.
const SALT_TEXT: u64 = 0x7465_7874;
const SALT_VISION: u64 = 0x7669_7369;
const SALT_FIRST_COUPLING: u64 = 0x6370_6c30;
const SALT_DEEP_COUPLING: u64 = 0x6370_6c31;

/// `[n, width]` tokens drawn from `N(0, 0.02²)`, seeded.
fn random_tokens<B: Backend>(
    n: usize,
    width: usize,
    seed: u64,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(0.0f32, TOKEN_STD).expect("a finite std");
    let values: Vec<f32> = (0..n * width).map(|_| normal.sample(&mut rng)).collect();
    Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [n, width]),
        device,
    ))
}

/// A copy of `layer` with parameters of its own (new ids, so that the optimiser keeps a state
/// for each).
fn fresh_copy<B: Backend>(layer: &Linear<B>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(layer.weight.val()),
        bias: layer.bias.as_ref().map(|b| Param::from_tensor(b.val())),
    }
}

/// The language context's initialisation: the first `text_ctx` tokens of `ctx_init` when it has
/// that many, random tokens otherwise (the official rule).
fn text_init(config: &DeepPromptConfig, tokenizer: &ClipTokenizer) -> ExpertInit {
    if config.text_ctx <= tokenizer.encode(&config.ctx_init).len() {
        ExpertInit::Leading {
            text: config.ctx_init.clone(),
            n_ctx: config.text_ctx,
        }
    } else {
        ExpertInit::Random {
            n_ctx: config.text_ctx,
            std: TOKEN_STD,
        }
    }
}

/// Errors unless `depth` prompt layers fit an encoder of `layers` layers.
fn check_depth(tower: &str, depth: usize, layers: usize) -> Result<(), TrainError> {
    if depth > layers {
        return Err(TrainError::Config(format!(
            "prompt depth {depth} is deeper than the {tower} encoder's {layers} layers \
             (--prompt-depth at most {layers})"
        )));
    }
    Ok(())
}

/// Errors unless `n_ctx` language tokens fit a context of `context_length` positions beside SOT,
/// the final period and EOT (the class name's tokens are checked with the class names).
fn check_length(n_ctx: usize, context_length: usize) -> Result<(), TrainError> {
    let most = context_length.saturating_sub(3);
    if n_ctx > most {
        return Err(TrainError::Config(format!(
            "{n_ctx} language prompt tokens do not fit the text encoder's context length \
             {context_length} (--n-ctx at most {most}, beside SOT, the period and EOT)"
        )));
    }
    Ok(())
}

/// Everything a deep-prompt method learns.
#[derive(Module, Debug)]
pub struct TowerPrompts<B: Backend> {
    /// The language context right after SOT (a one-expert mixture); `None` for VPT, whose text
    /// side is the frozen hand-made prompt.
    pub text: Option<MixtureOfPrompts<B>>,
    /// The language tokens put in the context's place before text layers `1, 2, …`.
    pub text_deep: Vec<Param<Tensor<B, 2>>>,
    /// Visual tokens of their own, of image layers `0, 1, …` (VPT, IVLP; empty for MaPLe).
    pub vision: Vec<Param<Tensor<B, 2>>>,
    /// MaPLe's couplings (text width → vision width): depth 0's of the context, depth `k`'s of
    /// `text_deep[k - 1]`.
    pub coupling: Vec<Linear<B>>,
}

impl<B: Backend> TowerPrompts<B> {
    /// The prompts `config` describes for `clip`, initialised from `seed`; errors when a depth
    /// exceeds an encoder's layers or the image tower is not a ViT.
    pub fn new(
        config: &DeepPromptConfig,
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let (vision_width, vision_layers) = clip.vision.prompt_layers().ok_or_else(|| {
            TrainError::Config("deep visual prompts need a ViT image tower, not a ResNet".into())
        })?;
        check_depth("text", config.text_depth, clip.text.layers())?;
        check_length(config.text_ctx, clip.text.context_length())?;
        check_depth("image", config.vision_depth, vision_layers)?;
        let text_width = clip.text.width();
        let text = if config.text_ctx > 0 {
            let mixture = MixtureConfig::coop(text_init(config, tokenizer), seed);
            Some(MixtureOfPrompts::new(mixture, clip, tokenizer, device)?)
        } else {
            None
        };
        let text_deep = (1..config.text_depth)
            .map(|k| {
                random_tokens(
                    config.text_ctx,
                    text_width,
                    seed ^ SALT_TEXT ^ k as u64,
                    device,
                )
            })
            .collect();
        let (vision, coupling) = if config.coupled {
            // The official code deep-copies one layer for every depth after the first.
            let first = seeded_linear(text_width, vision_width, seed ^ SALT_FIRST_COUPLING, device);
            let deeper = seeded_linear(text_width, vision_width, seed ^ SALT_DEEP_COUPLING, device);
            let deeper = (1..config.vision_depth).map(|_| fresh_copy(&deeper));
            (Vec::new(), std::iter::once(first).chain(deeper).collect())
        } else {
            let tokens = (0..config.vision_depth)
                .map(|k| {
                    random_tokens(
                        config.vision_ctx,
                        vision_width,
                        seed ^ SALT_VISION ^ k as u64,
                        device,
                    )
                })
                .collect();
            (tokens, Vec::new())
        };
        Ok(Self {
            text,
            text_deep,
            vision,
            coupling,
        })
    }

    /// The visual tokens of image layers `0, 1, …` (`[n, vision width]` each).
    pub fn visual(&self) -> Vec<Tensor<B, 2>> {
        if self.coupling.is_empty() {
            return self.vision.iter().map(Param::val).collect();
        }
        let context = self
            .context()
            .expect("a coupled run learns a language context");
        std::iter::once(context)
            .chain(self.text_deep.iter().map(Param::val))
            .zip(&self.coupling)
            .map(|(tokens, layer)| layer.forward(tokens))
            .collect()
    }

    /// The language context `[n, text width]`, if the run learns one.
    fn context(&self) -> Option<Tensor<B, 2>> {
        let pool = &self.text.as_ref()?.pool;
        pool.ctx.first()?.as_ref().map(Param::val)
    }

    /// The language tokens of the text layers after the first, at the context's positions (right
    /// after SOT).
    pub fn text_deep(&self) -> DeepPrompts<B> {
        DeepPrompts {
            start: 1,
            layers: self.text_deep.iter().map(Param::val).collect(),
        }
    }

    /// Normalised text features `[C, D]` of a class set.
    pub fn text_features(&self, text: &TextEncoder<B>, classes: &ClassText<B>) -> Tensor<B, 2> {
        match (classes, &self.text) {
            (ClassText::Prompted(prompts), Some(mixture)) => {
                let table = mixture.pool.table(&prompts.fixed.device());
                l2_normalize(prompts.encode_prompted(text, table, &self.text_deep(), TEXT_CHUNK))
            }
            (ClassText::Fixed(features), _) => features.clone(),
            (ClassText::Prompted(_), None) => unreachable!("prompted classes without a context"),
        }
    }

    /// The fixed part of the class set's text side: the prompts' fixed tokens when the run learns
    /// a language context, otherwise the frozen features of `"{ctx_init} {}."` (VPT).
    pub fn class_text(
        &self,
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        ctx_init: &str,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<ClassText<B>, TrainError> {
        if let Some(mixture) = &self.text {
            return Ok(ClassText::Prompted(
                mixture.class_prompts(&clip.text, tokenizer, classnames, device)?,
            ));
        }
        let context = clip.text.context_length();
        let tokens: Vec<Vec<u32>> = classnames
            .iter()
            .map(|c| tokenizer.tokenize(&format!("{ctx_init} {c}."), context))
            .collect();
        Ok(ClassText::Fixed(
            l2_normalize(clip.text.forward_tokens(&tokens, device)).detach(),
        ))
    }

    /// The trainable tensors other than the language context's, by checkpoint name.
    fn params(&self) -> Vec<(String, ParamRef<'_, B>)> {
        let mut out: Vec<(String, ParamRef<'_, B>)> = Vec::new();
        for (k, p) in self.text_deep.iter().enumerate() {
            out.push((format!("text_deep.{}", k + 1), ParamRef::Two(p)));
        }
        for (k, p) in self.vision.iter().enumerate() {
            out.push((format!("vision.{k}"), ParamRef::Two(p)));
        }
        for (k, layer) in self.coupling.iter().enumerate() {
            out.extend(linear_params(&format!("coupling.{k}"), layer));
        }
        out
    }

    /// Every trainable tensor by checkpoint name (the context as `ctx.0`, linear weights in
    /// Burn's `[in, out]` layout).
    pub fn tensors(&self) -> Vec<(String, TensorData)> {
        let mut out = self
            .text
            .as_ref()
            .map(MixtureOfPrompts::tensors)
            .unwrap_or_default();
        out.extend(self.params().into_iter().map(|(name, p)| (name, p.data())));
        out
    }

    /// Every trainable parameter's id, under the names of [`Self::tensors`].
    pub fn param_ids(&self) -> Vec<(String, ParamId)> {
        let mut out = self
            .text
            .as_ref()
            .map(MixtureOfPrompts::param_ids)
            .unwrap_or_default();
        out.extend(self.params().into_iter().map(|(name, p)| (name, p.id())));
        out
    }

    /// Trainable parameter ids by rank (for the optimiser step).
    pub(crate) fn ids_by_rank(&self) -> (Vec<ParamId>, Vec<ParamId>) {
        let (one, mut two) = super::super::named::ids_by_rank(&self.params());
        if let Some(mixture) = &self.text {
            two.extend(mixture.param_ids().into_iter().map(|(_, id)| id));
        }
        (one, two)
    }

    /// The prompts with a checkpoint's tensors, each taken out of `saved`.
    pub fn load(
        self,
        saved: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let text = match self.text {
            Some(mixture) => Some(
                mixture
                    .load_tensors(saved, device)
                    .map_err(|e| TrainError::Checkpoint(e.to_string()))?,
            ),
            None => None,
        };
        let tokens = |saved: &mut BTreeMap<_, _>,
                      prefix: &str,
                      first: usize,
                      params: &[Param<Tensor<B, 2>>]| {
            params
                .iter()
                .enumerate()
                .map(|(k, p)| take_param(saved, &format!("{prefix}.{}", k + first), p, device))
                .collect::<Result<Vec<_>, _>>()
        };
        let text_deep = tokens(saved, "text_deep", 1, &self.text_deep)?;
        let vision = tokens(saved, "vision", 0, &self.vision)?;
        let coupling = self
            .coupling
            .iter()
            .enumerate()
            .map(|(k, layer)| take_linear(saved, &format!("coupling.{k}"), layer, device))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text,
            text_deep,
            vision,
            coupling,
        })
    }
}

/// The fixed text side of one class set.
#[derive(Module, Debug)]
pub enum ClassText<B: Backend> {
    /// The prompts' fixed tokens, around the learned context.
    Prompted(ClassPrompts<B>),
    /// Frozen normalised features `[C, D]` (VPT's hand-made prompt).
    Fixed(Tensor<B, 2>),
}
