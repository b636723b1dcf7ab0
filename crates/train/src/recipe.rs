//! The method description's training recipes (its section 6) as data: what a run of a method on a
//! dataset uses unless told otherwise. `mocoop train`, `protocol`, `demo` and `bench` start from
//! [`Recipe::for_run`]; every flag overrides its field.
//!
//! - ImageNet: 10 epochs (1 of warm-up) at batch size 1 and learning rate 0.002, not scaled with
//!   the batch size (each of its steps encodes E × C = 20,000 prompts, whatever the batch);
//! - every other dataset: 50 epochs (5 of warm-up) at batch size 32 and learning rate 0.032,
//!   scaled linearly with the batch size.
//!
//! Both use SGD with momentum 0.9, weight decay 5e-4, global gradient-norm clipping at 1.0 and a
//! constant warm-up rate of 1e-5; the image LayerNorms (tuned by MoCoOp only) train at 0.1× the
//! rate. The setting (base-to-new or few-shot) does not enter: the description gives the few-shot
//! setting no recipe of its own, and the transfer protocols, which train on ImageNet in the
//! few-shot setting, get ImageNet's by its name. CoOp and zero-shot CLIP share MoCoOp's schedule.
//!
//! CoCoOp uses its official configuration (10 epochs, 1 of warm-up, at batch size 1 and learning
//! rate 0.002, not scaled, no clipping). KgCoOp and ProGrad use their official configurations on every dataset (one warm-up epoch at
//! 1e-5, learning rate 0.002 not scaled with the batch, no clipping): KgCoOp 100 epochs at batch
//! 128 (`vit_b16_ep100_ctxv1`, λ_kg = 8), ProGrad 100 epochs at batch 32 (`rn50_ep100`, λ = 1,
//! T = 1), each with its own hand-made prompt for the dataset (`hand_made`).
//!
//! LASP uses the configuration the MoCoOp code (built on LASP's) ships for it
//! (`vit_b16_c4_ep25_batch32_cls_t2t_5_wcl_25_g1_b_lr32`) on every dataset: 25 epochs (3 of
//! warm-up at 1e-5) at batch size 32 and learning rate 0.032, not scaled, no clipping, the text
//! loss against every template at weight 5, the text bias `w` and the image LayerNorms trained.
//!
//! `--recipe official` ([`RecipeName::Official`], MoCoOp only) is what the official code
//! (github dyabel/mocoop on Dassl) does instead of the method description's reading: the
//! base-to-new configuration that parses (`vit_b16_c4_ep25_batch32_cls_t2t_5_wcl_25_g1_b_lr32`:
//! 25 epochs, 3 of warm-up, learning rate 0.032 at any batch size; ImageNet's as above) and the
//! behaviours of [`OfficialBehaviours`], each also a flag of its own.
//!
//! VPT, IVLP and MaPLe use their official configurations on every dataset: 5 epochs (1 of warm-up
//! at 1e-5) at batch size 4 and learning rate 0.0035 (VPT 0.0025), not scaled, no clipping.
//! PromptSRC uses its base-to-new one (`vit_b16_c2_ep20_batch4_4+4ctx`): 20 epochs (1 of warm-up)
//! at batch size 4 and learning rate 0.0025; its loss weights and aggregation are
//! `config::SelfRegulation::official`.

use mocoop_model::prompt::{ContextCount, LayoutOptions};

pub use crate::config::RecipeName;
use crate::config::{GateTarget, LossConfig, Method, OptimConfig};
use crate::hand_made::hand_made_template;

/// The official MoCoOp code's behaviours that the method description's reading leaves out
/// (issue #27). Each is a flag of `train`; `--recipe official` turns them all on. The gating
/// target (`softmax(a + 10·[top-2])`, not detached) is in the recipe's `loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OfficialBehaviours {
    /// Classification prompts without the final period; contexts counted in words.
    pub layout: LayoutOptions,
    /// Below this batch size `L_text` regularises only the routed experts (0: never).
    pub routed_text_below_batch: usize,
    /// The warm-up rate for every parameter group, the image LayerNorms included.
    pub warmup_all_groups: bool,
    /// The frozen encoders in f16 (with loss scaling) on GPU backends, as AMP; f32 on the CPU.
    pub f16_on_gpu: bool,
    /// The official configurations' template groups (Food101's double space, the ImageNet
    /// domain targets' 16 groups).
    pub official_templates: bool,
}

impl OfficialBehaviours {
    /// All of them, as the official code has them.
    pub fn all() -> Self {
        Self {
            layout: LayoutOptions {
                context_count: ContextCount::Words,
                classify_without_period: true,
            },
            routed_text_below_batch: 4,
            warmup_all_groups: true,
            f16_on_gpu: true,
            official_templates: true,
        }
    }
}

/// How the learning rate follows the batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LrScaling {
    /// `base_lr × batch size / the recipe's batch size` (the linear scaling rule).
    Linear,
    /// `base_lr` at any batch size.
    None,
}

/// The one dataset with a recipe of its own.
const IMAGENET: &str = "imagenet";

/// A method's training defaults on one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Training epochs.
    pub epochs: usize,
    /// Epochs at the constant warm-up rate, of [`Self::epochs`] (see [`Self::optim`] for other
    /// run lengths).
    pub warmup_epochs: usize,
    /// The constant warm-up learning rate.
    pub warmup_lr: f64,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate at [`Self::batch_size`].
    pub base_lr: f64,
    /// How the learning rate follows another batch size.
    pub lr_scaling: LrScaling,
    /// SGD momentum (no dampening).
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    pub clip_norm: Option<f32>,
    /// Multiplier of the learning rate for the image LayerNorms.
    pub ln_lr_scale: f64,
    /// Whether the image encoder's LayerNorms train (MoCoOp's published configuration does).
    pub ln_tuning: bool,
    /// Loss weights: MoCoOp's text-level and gating losses, cross-entropy alone for the others.
    pub loss: LossConfig,
    /// The official code's behaviours (none but in [`RecipeName::Official`]).
    pub official: OfficialBehaviours,
}

impl Recipe {
    /// The recipe `name` of `method` on `dataset`; the official one is MoCoOp's only.
    pub fn named(name: RecipeName, method: Method, dataset: &str) -> Result<Self, String> {
        match name {
            RecipeName::Default => Ok(Self::for_run(method, dataset)),
            RecipeName::Official if method == Method::Mocoop => Ok(Self::official_code(dataset)),
            RecipeName::Official => Err(format!(
                "--recipe official is the official MoCoOp code's (--method mocoop); --method \
                 {method} follows its own official configuration under --recipe default"
            )),
        }
    }

    /// The official MoCoOp code: 25 epochs (3 of warm-up) at learning rate 0.032, unscaled,
    /// on every dataset but ImageNet (whose recipe is the default's), with all of
    /// [`OfficialBehaviours`] and the softmax gating target, not detached.
    fn official_code(dataset: &str) -> Self {
        let clean = Self::for_run(Method::Mocoop, dataset);
        let (epochs, warmup_epochs) = if dataset == IMAGENET {
            (clean.epochs, clean.warmup_epochs)
        } else {
            (25, 3)
        };
        Self {
            epochs,
            warmup_epochs,
            lr_scaling: LrScaling::None,
            loss: LossConfig {
                gate_target: GateTarget::SoftmaxBoost,
                gate_target_detached: false,
                ..clean.loss.clone()
            },
            official: OfficialBehaviours::all(),
            ..clean
        }
    }

    /// The recipe of `method` on the dataset named `dataset` (as in the dataset registry).
    pub fn for_run(method: Method, dataset: &str) -> Self {
        if let Some(template) = hand_made_template(method, dataset) {
            return Self::official(method, template);
        }
        if method == Method::Cocoop {
            return Self::cocoop();
        }
        if method == Method::Lasp {
            return Self::lasp();
        }
        if let Some(recipe) = Self::deep(method) {
            return recipe;
        }
        let (epochs, warmup_epochs, batch_size, base_lr, lr_scaling) = if dataset == IMAGENET {
            (10, 1, 1, 0.002, LrScaling::None)
        } else {
            (50, 5, 32, 0.032, LrScaling::Linear)
        };
        let mocoop = method == Method::Mocoop;
        Self {
            epochs,
            warmup_epochs,
            warmup_lr: 1e-5,
            batch_size,
            base_lr,
            lr_scaling,
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_norm: Some(1.0),
            ln_lr_scale: 0.1,
            ln_tuning: mocoop,
            loss: if mocoop {
                LossConfig::mocoop()
            } else {
                LossConfig::coop()
            },
            official: OfficialBehaviours::default(),
        }
    }

    /// KgCoOp's or ProGrad's official configuration, with `hand_made` as the dataset's prompt.
    fn official(method: Method, hand_made: &str) -> Self {
        if method == Method::Kgcoop {
            Self::official_schedule(100, 128, LossConfig::kgcoop(hand_made))
        } else {
            Self::official_schedule(100, 32, LossConfig::prograd(hand_made))
        }
    }

    /// CoCoOp's official configuration (`vit_b16_c4_ep10_batch1_ctxv1`): 10 epochs at batch
    /// size 1.
    fn cocoop() -> Self {
        Self::official_schedule(10, 1, LossConfig::coop())
    }

    /// LASP's configuration (see the module's documentation).
    fn lasp() -> Self {
        Self {
            warmup_epochs: 3,
            base_lr: 0.032,
            ln_tuning: true,
            ..Self::official_schedule(25, 32, LossConfig::lasp())
        }
    }

    /// The official configurations of the deep-prompt methods on every dataset (MaPLe's
    /// `vit_b16_c2_ep5_batch4_2ctx`, IVLP's `vit_b16_c2_ep5_batch4_2+2ctx`, VPT's
    /// `vit_b16_c2_ep5_batch4_4`): 5 epochs at batch size 4, learning rate 0.0035 (VPT 0.0025);
    /// PromptSRC's `vit_b16_c2_ep20_batch4_4+4ctx`: 20 epochs at batch size 4, learning rate
    /// 0.0025; the CoOp family's schedule otherwise; `None` for the other methods.
    fn deep(method: Method) -> Option<Self> {
        let (epochs, base_lr) = match method {
            Method::Maple | Method::Ivlp => (5, 0.0035),
            Method::Vpt => (5, 0.0025),
            Method::Promptsrc => (20, 0.0025),
            _ => return None,
        };
        Some(Self {
            base_lr,
            ..Self::official_schedule(epochs, 4, LossConfig::coop())
        })
    }

    /// The schedule the CoOp family's official configurations share: `epochs` (1 of warm-up at
    /// 1e-5) at `batch_size` and learning rate 0.002, not scaled, no clipping, SGD with momentum
    /// 0.9 and weight decay 5e-4, the image LayerNorms frozen.
    fn official_schedule(epochs: usize, batch_size: usize, loss: LossConfig) -> Self {
        Self {
            epochs,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            batch_size,
            base_lr: 0.002,
            lr_scaling: LrScaling::None,
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_norm: None,
            ln_lr_scale: 0.1,
            ln_tuning: false,
            loss,
            official: OfficialBehaviours::default(),
        }
    }

    /// The learning rate at `batch_size` images per step.
    pub fn lr(&self, batch_size: usize) -> f64 {
        match self.lr_scaling {
            LrScaling::Linear => self.base_lr * batch_size as f64 / self.batch_size as f64,
            LrScaling::None => self.base_lr,
        }
    }

    /// The warm-up of a run of `epochs` epochs: the recipe's share of them (at least one), never
    /// more than the recipe's own, and always short of the whole run, so that at least one epoch
    /// trains at the real rate (a 2-epoch run of the 50-epoch recipe warms up for 1, not 5).
    pub fn warmup_epochs_for(&self, epochs: usize) -> usize {
        let share = (self.warmup_epochs * epochs / self.epochs).max(1);
        share.min(self.warmup_epochs).min(epochs.saturating_sub(1))
    }

    /// The optimiser and schedule of a run of `epochs` epochs at `batch_size` images per step:
    /// the learning rate as [`Self::lr`] scales it, the warm-up as [`Self::warmup_epochs_for`]
    /// does.
    pub fn optim(&self, batch_size: usize, epochs: usize) -> OptimConfig {
        OptimConfig {
            lr: self.lr(batch_size),
            ln_lr_scale: self.ln_lr_scale,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            clip_norm: self.clip_norm,
            epochs,
            warmup_epochs: self.warmup_epochs_for(epochs),
            warmup_lr: self.warmup_lr,
            warmup_all_groups: self.official.warmup_all_groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn every_dataset_but_imagenet_trains_50_epochs_at_0_032_per_32_images() {
        let r = Recipe::for_run(Method::Mocoop, "dtd");
        assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (50, 5, 32));
        assert_eq!(r.lr_scaling, LrScaling::Linear);
        assert!(close(r.lr(32), 0.032));
        assert!(close(r.lr(64), 0.064));
        assert!(close(r.lr(8), 0.008));
        assert_eq!(r.warmup_lr, 1e-5);
        assert_eq!(
            (r.momentum, r.weight_decay, r.clip_norm),
            (0.9, 5e-4, Some(1.0))
        );
        assert_eq!(r.ln_lr_scale, 0.1);
        // The recipe as published: its own batch size and epochs give its own numbers back.
        let optim = r.optim(r.batch_size, r.epochs);
        assert!(close(optim.lr, 0.032));
        assert_eq!((optim.epochs, optim.warmup_epochs), (50, 5));
        assert_eq!(Recipe::for_run(Method::Mocoop, "imagenet_a"), r);
    }

    #[test]
    fn imagenet_trains_10_epochs_at_0_002_per_image_unscaled() {
        let r = Recipe::for_run(Method::Mocoop, "imagenet");
        assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (10, 1, 1));
        assert_eq!(r.lr_scaling, LrScaling::None);
        assert!(close(r.lr(1), 0.002));
        assert!(close(r.lr(8), 0.002));
        let optim = r.optim(r.batch_size, r.epochs);
        assert_eq!((optim.epochs, optim.warmup_epochs), (10, 1));
        assert_eq!(optim.clip_norm, Some(1.0));
    }

    #[test]
    fn the_method_decides_losses_and_layernorm_tuning() {
        let mocoop = Recipe::for_run(Method::Mocoop, "dtd");
        assert!(mocoop.ln_tuning);
        assert_eq!(mocoop.loss, LossConfig::mocoop());
        assert_eq!(
            (mocoop.loss.lambda_text, mocoop.loss.lambda_gate),
            (5.0, 1.0)
        );
        for method in [Method::Coop, Method::ZeroShot] {
            let other = Recipe::for_run(method, "dtd");
            assert!(!other.ln_tuning);
            assert_eq!(other.loss, LossConfig::coop());
            // The schedule is the dataset's, whatever the method.
            assert_eq!(other.optim(32, 50), mocoop.optim(32, 50));
        }
    }

    #[test]
    fn kgcoop_and_prograd_follow_their_official_configurations() {
        let kg = Recipe::for_run(Method::Kgcoop, "oxford_pets");
        assert_eq!((kg.epochs, kg.warmup_epochs, kg.batch_size), (100, 1, 128));
        assert!(close(kg.lr(32), 0.002) && kg.clip_norm.is_none() && !kg.ln_tuning);
        assert_eq!(kg.loss.lambda_kg, 8.0);
        assert_eq!(
            kg.loss.hand_made.as_deref(),
            Some("a photo of a {}, a type of pet.")
        );
        let pg = Recipe::for_run(Method::Prograd, "oxford_pets");
        assert_eq!((pg.epochs, pg.batch_size), (100, 32));
        assert_eq!(
            pg.loss.hand_made.as_deref(),
            Some("a type of pet, a photo of a {}.")
        );
        assert_eq!(
            pg.loss.prograd.map(|p| (p.lambda, p.temperature)),
            Some((1.0, 1.0))
        );
        // A dataset the tables do not name, a custom one, gets the common prompt.
        let custom = Recipe::for_run(Method::Kgcoop, "my_data");
        assert_eq!(custom.loss.hand_made.as_deref(), Some("a photo of a {}."));
    }

    #[test]
    fn lasp_follows_the_configuration_the_mocoop_code_ships_for_it() {
        let r = Recipe::for_run(Method::Lasp, "dtd");
        assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (25, 3, 32));
        assert!(close(r.lr(8), 0.032) && r.clip_norm.is_none() && r.ln_tuning);
        assert_eq!(r.loss, LossConfig::lasp());
        assert_eq!((r.loss.lambda_text, r.loss.text_tau), (5.0, 0.01));
        assert_eq!(Recipe::for_run(Method::Lasp, "imagenet"), r);
    }

    #[test]
    fn the_official_recipe_is_the_official_codes_configuration_and_behaviours() {
        let r = Recipe::named(RecipeName::Official, Method::Mocoop, "dtd").unwrap();
        assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (25, 3, 32));
        assert!(close(r.lr(32), 0.032) && close(r.lr(8), 0.032));
        assert_eq!(r.official, OfficialBehaviours::all());
        assert_eq!(r.loss.gate_target, GateTarget::SoftmaxBoost);
        assert!(!r.loss.gate_target_detached);
        let optim = r.optim(r.batch_size, r.epochs);
        assert_eq!((optim.epochs, optim.warmup_epochs), (25, 3));
        assert!(optim.warmup_all_groups);
        let imagenet = Recipe::named(RecipeName::Official, Method::Mocoop, "imagenet").unwrap();
        assert_eq!((imagenet.epochs, imagenet.warmup_epochs), (10, 1));
        assert_eq!(imagenet.batch_size, 1);
        // The default stays the clean reading, and no other method has an official recipe here.
        let clean = Recipe::named(RecipeName::Default, Method::Mocoop, "dtd").unwrap();
        assert_eq!(clean, Recipe::for_run(Method::Mocoop, "dtd"));
        assert_eq!(clean.official, OfficialBehaviours::default());
        let err = Recipe::named(RecipeName::Official, Method::Coop, "dtd").unwrap_err();
        assert!(err.contains("--method mocoop"), "{err}");
    }

    #[test]
    fn deep_prompt_methods_follow_their_official_configurations() {
        for (method, lr) in [
            (Method::Maple, 0.0035),
            (Method::Ivlp, 0.0035),
            (Method::Vpt, 0.0025),
        ] {
            for dataset in ["imagenet", "dtd"] {
                let r = Recipe::for_run(method, dataset);
                assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (5, 1, 4));
                assert!(close(r.lr(32), lr) && r.clip_norm.is_none() && !r.ln_tuning);
                assert_eq!(r.loss, LossConfig::coop());
            }
        }
    }

    #[test]
    fn promptsrc_follows_its_official_base_to_new_configuration() {
        use crate::config::{DeepPromptConfig, SelfRegulation};
        for dataset in ["imagenet", "dtd"] {
            let r = Recipe::for_run(Method::Promptsrc, dataset);
            assert_eq!((r.epochs, r.warmup_epochs, r.batch_size), (20, 1, 4));
            assert!(close(r.lr(32), 0.0025) && close(r.warmup_lr, 1e-5));
            assert!(r.clip_norm.is_none() && !r.ln_tuning);
        }
        let deep = DeepPromptConfig::official(Method::Promptsrc).unwrap();
        let shape = (
            deep.text_ctx,
            deep.text_depth,
            deep.vision_ctx,
            deep.vision_depth,
        );
        assert_eq!(shape, (4, 9, 4, 9));
        assert!(!deep.coupled && deep.ctx_init == "a photo of a");
        let regulation = deep.self_regulation.unwrap();
        assert_eq!(regulation, SelfRegulation::official());
        assert_eq!(
            (regulation.text_weight, regulation.image_weight),
            (25.0, 10.0)
        );
        assert_eq!((regulation.gpa_mean, regulation.gpa_std), (15.0, 1.0));
        // The other deep methods carry no self-regulation.
        assert!(
            DeepPromptConfig::official(Method::Ivlp)
                .unwrap()
                .self_regulation
                .is_none()
        );
    }

    #[test]
    fn a_short_run_warms_up_for_its_share_and_trains_at_the_real_rate() {
        let r = Recipe::for_run(Method::Mocoop, "dtd");
        let warmup = |epochs| r.warmup_epochs_for(epochs);
        assert_eq!(
            [1, 2, 5, 10, 19, 20, 30, 50, 200].map(warmup),
            [0, 1, 1, 1, 1, 2, 3, 5, 5]
        );
        let imagenet = Recipe::for_run(Method::Coop, "imagenet");
        assert_eq!(
            [1, 2, 10, 40].map(|e| imagenet.warmup_epochs_for(e)),
            [0, 1, 1, 1]
        );
        for epochs in 1..=60 {
            assert!(r.warmup_epochs_for(epochs) < epochs, "{epochs} epochs");
        }
        let optim = r.optim(16, 2);
        assert_eq!((optim.epochs, optim.warmup_epochs), (2, 1));
        assert!(close(optim.lr, 0.016));
    }
}
