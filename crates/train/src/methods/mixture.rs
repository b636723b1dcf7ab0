//! MoCoOp and CoOp (one expert, no router) as a prompt learner: [`MocoopModel`] trains, and
//! [`MixtureRun`] (CLIP and the trained mixture) classifies.

use std::collections::BTreeMap;

use burn::module::ParamId;
use burn::tensor::TensorData;
use burn::tensor::backend::{AutodiffBackend, Backend};

use mocoop_model::Clip;
use mocoop_model::prompt::{ExpertInit, MixtureConfig, MixtureOfPrompts, TextShard};
use mocoop_model::templates::TemplateTable;
use mocoop_model::tokenizer::ClipTokenizer;

use super::cached::TextCachedClassifier;
use crate::config::TrainConfig;
use crate::learner::{ImageClassifier, LearnerSetup, LossTerm, PromptLearner, TrainedLearner};
use crate::model::{MocoopModel, StepState, visual_ln_params};
use crate::{TrainError, checkpoint};

/// Prompts are encoded this many at a time at inference.
pub const TEXT_CHUNK: usize = 1024;

impl<B: AutodiffBackend> PromptLearner<B> for MocoopModel<B> {
    fn build(setup: LearnerSetup<'_, B>) -> Result<Self, TrainError> {
        let config = setup.config;
        let mut model = MocoopModel::new(
            setup.clip,
            setup.tokenizer,
            config.mixture.clone(),
            setup.groups.groups(),
            &setup.classes,
            config.loss.clone(),
            config.ln_tuning,
            config.router_noise,
            setup.device,
        )?;
        model.settings.clip_norm = config.optim.clip_norm;
        model.settings.ln_lr_scale = config.optim.ln_lr_scale;
        let o = &config.optim;
        model.settings.warmup_lr_all_groups =
            (o.warmup_all_groups && o.warmup_epochs > 0).then_some(o.warmup_lr);
        model.settings.noise_seed = config.data.seed;
        model.settings.encode_all_experts = setup.encode_all_experts;
        model.state = StepState::start(config.precision);
        Ok(model)
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        mixture_tensors(&self.clip, &self.mixture, self.settings.ln_tuning)
    }

    fn param_ids(&self) -> Vec<(String, ParamId)> {
        let mut ids = self.mixture.param_ids();
        if self.settings.ln_tuning {
            ids.extend(
                visual_ln_params(&self.clip)
                    .into_iter()
                    .map(|(name, param)| (name, param.id)),
            );
        }
        ids
    }

    fn load_tensors(
        mut self,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        self.mixture = self
            .mixture
            .load_tensors(tensors, device)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        if self.settings.ln_tuning {
            self.clip = checkpoint::load_visual_ln(self.clip, tensors, device)?;
        }
        Ok(self)
    }

    fn state(&self) -> StepState {
        self.state
    }

    fn set_state(&mut self, state: StepState) {
        self.state = state;
    }

    fn loss_terms(&self) -> Vec<LossTerm> {
        let l = &self.settings.loss;
        [
            (l.lambda_text, "L_text", "text"),
            (l.lambda_gate, "L_gate", "gate"),
            (l.lambda_lb, "L_lb", "lb"),
            (l.lambda_kd, "L_kd", "kd"),
        ]
        .into_iter()
        .filter(|(weight, _, _)| *weight > 0.0)
        .map(|(_, name, key)| LossTerm { name, key })
        .collect()
    }

    fn routed_experts(&self) -> Option<usize> {
        self.mixture
            .router
            .as_ref()
            .map(|_| self.mixture.num_experts())
    }

    fn clip(&self) -> &Clip<B> {
        &self.clip
    }

    fn use_cached_features(&mut self) -> Result<(), TrainError> {
        self.settings.cached_features = true;
        Ok(())
    }

    fn split_text_by_class(&mut self, devices: &[B::Device]) -> Result<String, TrainError> {
        MocoopModel::split_text(self, devices);
        let rows = self.prompts.rows();
        let shards = &self.text_shards;
        let shares: Vec<String> = std::iter::once(TextShard::first_device_rows(shards, rows))
            .chain(shards.iter().map(TextShard::rows))
            .map(|n| n.to_string())
            .collect();
        Ok(if shares.len() > 1 {
            format!(
                "each step's {rows} prompts were encoded on {} devices, in shares of {} prompts \
                 (about equal in tokens)",
                shares.len(),
                shares.join(", ")
            )
        } else {
            "the prompts were not split by class: there was one device".to_string()
        })
    }

    fn into_trained(model: Self::InnerModule) -> Box<dyn TrainedLearner<B::InnerBackend>> {
        Box::new(MixtureRun {
            ln_tuning: model.settings.ln_tuning,
            clip: model.clip,
            mixture: model.mixture,
            official_source: None,
        })
    }
}

/// The trainable tensors of CLIP with a mixture, by checkpoint name: the mixture's, then (with
/// LN tuning) the image LayerNorms'.
fn mixture_tensors<B: Backend>(
    clip: &Clip<B>,
    mixture: &MixtureOfPrompts<B>,
    ln_tuning: bool,
) -> Vec<(String, TensorData)> {
    let mut out = mixture.tensors();
    if ln_tuning {
        for (name, param) in visual_ln_params(clip) {
            out.push((name, param.val().into_data()));
        }
    }
    out
}

/// A trained MoCoOp or CoOp run at inference: CLIP (with the run's image LayerNorms) and the
/// mixture.
#[derive(Debug)]
pub struct MixtureRun<B: Backend> {
    /// CLIP, with the trained image LayerNorms when the run tuned them.
    pub clip: Clip<B>,
    /// The trained mixture.
    pub mixture: MixtureOfPrompts<B>,
    /// Whether the run tuned the image LayerNorms (they are then among its tensors).
    pub ln_tuning: bool,
    /// The run's dataset, when it used the official code's template table: evaluated on a
    /// dataset whose official groups are other experts, the run is loaded into them as the
    /// official code loads it (see [`MixtureRun::official_target`]).
    pub official_source: Option<String>,
}

impl<B: Backend> MixtureRun<B> {
    /// The run of `config` with the trainable tensors of its checkpoint, each taken out of
    /// `tensors`, on `clip` (the CLIP it was trained with).
    pub fn load(
        config: &TrainConfig,
        clip: Clip<B>,
        tokenizer: &ClipTokenizer,
        tensors: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let mixture = MixtureOfPrompts::new(config.mixture.clone(), &clip, tokenizer, device)?;
        let mixture = mixture
            .load_tensors(tensors, device)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let clip = if config.ln_tuning {
            checkpoint::load_visual_ln(clip, tensors, device)?
        } else {
            clip
        };
        Ok(Self {
            clip,
            mixture,
            ln_tuning: config.ln_tuning,
            official_source: config
                .data
                .official_templates
                .then(|| config.data.dataset.clone()),
        })
    }

    /// Under the official template table, on a dataset whose groups are not the run's experts
    /// (ImageNet's 20 on a domain target's 16): a mixture of that dataset's experts holding the
    /// run's tensors where their shapes match and fresh ones elsewhere, as the official
    /// `MoCoOp.load_model` leaves them, with a warning naming those (the router among them:
    /// routing there is random). `None` where the run's own mixture applies.
    fn official_target(
        &self,
        tokenizer: &ClipTokenizer,
        dataset: &str,
        device: &B::Device,
    ) -> Result<Option<MixtureOfPrompts<B>>, TrainError> {
        let own = self.mixture.config();
        let Some(source) = self.official_source.as_deref() else {
            return Ok(None);
        };
        let Ok(groups) = TemplateTable::official().groups(dataset) else {
            return Ok(None);
        };
        let experts: Vec<ExpertInit> = groups
            .groups()
            .iter()
            .map(|g| ExpertInit::Template {
                template: g[0].clone(),
            })
            .collect();
        if dataset == source || experts == own.experts {
            return Ok(None);
        }
        let config = MixtureConfig {
            experts,
            ..own.clone()
        };
        let fresh = MixtureOfPrompts::new(config, &self.clip, tokenizer, device)?;
        let (target, dropped) = fresh.adopt_matching(&self.mixture);
        let random = if dropped.iter().any(|d| d.starts_with("gate.")) {
            format!("; the router is among them, so routing on {dataset} is random")
        } else {
            String::new()
        };
        eprintln!(
            "warning: under the official recipe {dataset} has {} template groups and the run \
             {}: as the official code's load_model, tensors whose shape differs keep their fresh \
             initialisation: {}{random}",
            target.num_experts(),
            own.experts.len(),
            dropped.join(", ")
        );
        Ok(Some(target))
    }
}

impl<B: Backend> TrainedLearner<B> for MixtureRun<B> {
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
        let target = self.official_target(tokenizer, dataset, device)?;
        let mixture = target.as_ref().unwrap_or(&self.mixture);
        let prompts = mixture.class_prompts(&self.clip.text, tokenizer, classnames, device)?;
        let text = mixture.classifier(
            &self.clip.text,
            &prompts,
            self.clip.logit_scale(),
            TEXT_CHUNK,
        );
        Ok(Box::new(TextCachedClassifier::new(&self.clip, text)))
    }

    fn tensors(&self) -> Vec<(String, TensorData)> {
        mixture_tensors(&self.clip, &self.mixture, self.ln_tuning)
    }
}
