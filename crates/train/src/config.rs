//! Every setting of a training run, saved as `config.json` in the run directory.
//!
//! Each choice the method description leaves open (marked "decision" there) is a field here and a
//! flag on the command line, so that either reading can be run.

use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use serde::{Deserialize, Serialize};

use mocoop_model::prompt::MixtureConfig;

/// Which method a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Mixture of soft prompts with a router.
    Mocoop,
    /// One soft prompt (Zhou et al.'s CoOp).
    Coop,
    /// CoOp's context shifted per image by a meta-net (Zhou et al.'s CoCoOp).
    Cocoop,
    /// CoOp kept near the hand-made prompt's text features (Yao et al.'s KgCoOp).
    Kgcoop,
    /// CoOp whose gradient never points against zero-shot CLIP's (Zhu et al.'s ProGrad).
    Prograd,
    /// CoOp whose class features must also classify the hand-made templates' (Bulat and
    /// Tzimiropoulos's LASP), with the text bias `w` and the image LayerNorms.
    Lasp,
    /// No training: CLIP with hand-written prompts.
    #[value(alias = "zero_shot", alias = "zeroshot", alias = "zs")]
    ZeroShot,
    /// Deep visual prompts, the text side the frozen hand-made prompt (Jia et al.'s VPT-deep).
    Vpt,
    /// Independent deep vision and language prompts (Khattak et al.'s IVLP).
    Ivlp,
    /// Deep language prompts coupled into the image encoder (Khattak et al.'s MaPLe).
    Maple,
    /// IVLP's prompts kept near frozen CLIP's features and logits, aggregated over epochs
    /// (Khattak et al.'s PromptSRC).
    Promptsrc,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mocoop => "mocoop",
            Self::Coop => "coop",
            Self::Cocoop => "cocoop",
            Self::Kgcoop => "kgcoop",
            Self::Prograd => "prograd",
            Self::Lasp => "lasp",
            Self::ZeroShot => "zero-shot",
            Self::Vpt => "vpt",
            Self::Ivlp => "ivlp",
            Self::Maple => "maple",
            Self::Promptsrc => "promptsrc",
        })
    }
}

/// Which reading of the method a run's defaults follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RecipeName {
    /// The method description's (`../shared/spec/mocoop.md`), with each method's official
    /// configuration where it has one.
    #[default]
    Default,
    /// The official MoCoOp code's configuration and behaviours (MoCoOp only).
    Official,
}

/// Which prototypes the gating target compares the image with (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GatePrototypes {
    /// `a_g = <f, p[g, y]>`, the true class's prototype of each group (default).
    #[default]
    #[value(alias = "per_class")]
    PerClass,
    /// `a_g = <f, p̄[g]>` with `p̄[g] = normalize(mean_c p[g, c])` (the earliest published variant).
    #[value(alias = "class_agnostic")]
    ClassAgnostic,
}

/// The form of the gating target `q` (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GateTarget {
    /// Equal mass on the K groups with the largest `a_g`, none elsewhere (default).
    #[default]
    #[value(name = "top-k", alias = "topk")]
    TopKUniform,
    /// The published code's `softmax(a + 10·[g ∈ top-K])`: outside the top K the same up to
    /// ~e^-10, but it splits the mass between the top two as `sigmoid(a1 − a2)`, not evenly.
    #[value(name = "softmax")]
    SoftmaxBoost,
}

/// Which classes the grouped text-level loss contrasts (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TextClasses {
    /// Every class name of the dataset, base and new alike (default; no new-class image is used).
    #[default]
    All,
    /// Only the training classes.
    Train,
}

/// What the text-level loss `L_text` sets the learned class features against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TextTarget {
    /// MoCoOp's: each expert's class feature picks its class among its group's prototypes
    /// (default).
    #[default]
    #[value(name = "group-prototypes", alias = "groups")]
    GroupPrototypes,
    /// LASP's: every template's class feature picks its class among the soft prompt's class
    /// features (the prompt as the classifier of the hand-made texts); one soft prompt only.
    Templates,
}

/// The distance KgCoOp's knowledge guidance keeps small (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum KgDistance {
    /// `1 − cos` averaged over the classes (the official code; default).
    #[default]
    Cosine,
    /// The squared L2 distance of the normalised features, averaged over the classes (the paper).
    #[value(name = "l2", alias = "squared-l2")]
    SquaredL2,
}

/// Where ProGrad compares the two gradients (decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionScope {
    /// Each trainable tensor on its own (the official code; default).
    #[default]
    #[value(alias = "per_parameter")]
    PerParameter,
    /// Every trainable tensor as one vector.
    Global,
}

/// ProGrad's update: the cross-entropy gradient `G_ce`, projected off the gradient `G_kl` of the
/// distillation from zero-shot CLIP wherever the two point against each other:
/// `G = G_ce − λ (G_ce·Ĝ_kl) Ĝ_kl` when `G_ce·G_kl < 0`, else `G_ce`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProGradConfig {
    /// λ, how much of the opposing component is removed (1: all of it).
    pub lambda: f32,
    /// Temperature `T` of the distillation `T² · CE(softmax(t/T), softmax(s/T))`.
    pub temperature: f32,
    /// Per tensor or global.
    pub scope: ProjectionScope,
}

impl Default for ProGradConfig {
    /// The official configuration: λ = 1, T = 1, per tensor.
    fn default() -> Self {
        Self {
            lambda: 1.0,
            temperature: 1.0,
            scope: ProjectionScope::PerParameter,
        }
    }
}

/// Weights and options of the loss terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Weight of the grouped text-level supervision `L_text`.
    pub lambda_text: f32,
    /// Weight of the hard-prompt-guided gating loss `L_gate`.
    pub lambda_gate: f32,
    /// Weight of the Switch-style load-balancing loss `L_lb`.
    pub lambda_lb: f32,
    /// Weight of the logit distillation towards zero-shot CLIP `L_kd`.
    pub lambda_kd: f32,
    /// Temperature τ of `L_text` (decision; the published code uses raw cosines, τ = 1).
    pub text_tau: f32,
    /// Classes contrasted by `L_text` (decision).
    pub text_classes: TextClasses,
    /// What `L_text` contrasts with: MoCoOp's group prototypes or LASP's single templates.
    #[serde(default)]
    pub text_target: TextTarget,
    /// Prototypes of the gating target (decision).
    pub gate_prototypes: GatePrototypes,
    /// Form of the gating target (decision).
    pub gate_target: GateTarget,
    /// Whether the gating target is a fixed (detached) target (decision; default yes). Only the
    /// soft target has a gradient at all.
    pub gate_target_detached: bool,
    /// `L_text` regularises only the experts some image of the step is routed to; the others
    /// enter it with zero features (the official code below batch size 4: each counts `log C`
    /// per class, with no gradient), and their contexts are not updated at all (no weight decay,
    /// no momentum: PyTorch's SGD passes over a parameter without a gradient).
    #[serde(default)]
    pub text_routed_only: bool,
    /// The hand-made prompt (with `{}`) whose frozen text features KgCoOp's guidance and ProGrad's
    /// teacher use.
    #[serde(default)]
    pub hand_made: Option<String>,
    /// Weight of KgCoOp's knowledge guidance `L_kg`: the distance of the learned class text
    /// features from the hand-made prompt's.
    #[serde(default)]
    pub lambda_kg: f32,
    /// The distance of `L_kg`.
    #[serde(default)]
    pub kg_distance: KgDistance,
    /// ProGrad's gradient projection (its distillation term `kl` is logged, not added to the
    /// loss).
    #[serde(default)]
    pub prograd: Option<ProGradConfig>,
}

impl LossConfig {
    /// The paper's setting: λ_text = 5, λ_gate = 1, λ_lb = λ_kd = 0.
    pub fn mocoop() -> Self {
        Self {
            lambda_text: 5.0,
            lambda_gate: 1.0,
            lambda_lb: 0.0,
            lambda_kd: 0.0,
            text_tau: 1.0,
            text_classes: TextClasses::All,
            text_target: TextTarget::GroupPrototypes,
            gate_prototypes: GatePrototypes::PerClass,
            gate_target: GateTarget::TopKUniform,
            gate_target_detached: true,
            text_routed_only: false,
            hand_made: None,
            lambda_kg: 0.0,
            kg_distance: KgDistance::Cosine,
            prograd: None,
        }
    }

    /// CoOp: cross-entropy only.
    pub fn coop() -> Self {
        Self {
            lambda_text: 0.0,
            lambda_gate: 0.0,
            ..Self::mocoop()
        }
    }

    /// KgCoOp: cross-entropy and `λ_kg = 8` times `1 − cos` to `hand_made`'s features.
    pub fn kgcoop(hand_made: &str) -> Self {
        Self {
            hand_made: Some(hand_made.to_string()),
            lambda_kg: 8.0,
            ..Self::coop()
        }
    }

    /// ProGrad: cross-entropy, its gradient projected against the distillation from `hand_made`'s
    /// zero-shot logits (λ = 1, T = 1, per tensor).
    pub fn prograd(hand_made: &str) -> Self {
        Self {
            hand_made: Some(hand_made.to_string()),
            prograd: Some(ProGradConfig::default()),
            ..Self::coop()
        }
    }

    /// LASP: cross-entropy and `λ_text = 5` times the text-to-text loss against every template
    /// of the dataset, over all its class names, at τ = 0.01 (the official code multiplies the
    /// cosines by CLIP's logit scale, 100).
    pub fn lasp() -> Self {
        Self {
            lambda_text: 5.0,
            text_tau: 0.01,
            text_target: TextTarget::Templates,
            ..Self::coop()
        }
    }

    /// Whether a loss term uses the hand-made prompt's features.
    pub fn needs_hand_made(&self) -> bool {
        self.lambda_kg > 0.0 || self.prograd.is_some()
    }
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Learning rate of the prompts, router and bias (after any batch-size scaling).
    pub lr: f64,
    /// Multiplier of `lr` for the image encoder's LayerNorms (0.1).
    pub ln_lr_scale: f64,
    /// SGD momentum (PyTorch semantics: no dampening).
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// Global gradient-norm clipping threshold (`None`: no clipping).
    pub clip_norm: Option<f32>,
    /// Training epochs.
    pub epochs: usize,
    /// Epochs at the constant warm-up learning rate.
    pub warmup_epochs: usize,
    /// The constant warm-up learning rate.
    pub warmup_lr: f64,
    /// During the warm-up every parameter group trains at the warm-up rate, the image LayerNorms
    /// included (Dassl's constant warm-up); otherwise they get `ln_lr_scale` of it.
    #[serde(default)]
    pub warmup_all_groups: bool,
}

/// How a dataset is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// Train on the base half of the classes, test on base and new.
    #[value(
        name = "base2new",
        alias = "b2n",
        alias = "base-2-new",
        alias = "base_2_new"
    )]
    Base2new,
    /// Train and test on all classes.
    #[value(
        name = "fewshot",
        alias = "few-shot",
        alias = "few_shot",
        alias = "all"
    )]
    Fewshot,
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Dataset name (as in `template-groups.toml`).
    pub dataset: String,
    /// Data root.
    pub root: std::path::PathBuf,
    /// Base-to-new or all classes.
    pub setting: Setting,
    /// Images per class (0: the full training set).
    pub shots: usize,
    /// Seed of the few-shot draw, the shuffles, augmentation and initialisation.
    pub seed: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// A user's template-group file (instead of the built-in table).
    pub groups_file: Option<std::path::PathBuf>,
    /// Leave unreadable training images out (reported at the end) instead of stopping the run.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Without `groups_file`, the official code's template groups where they differ from the
    /// built-in table (Food101, ImageNet's domain-shift targets).
    #[serde(default)]
    pub official_templates: bool,
}

/// The prompts of zero-shot CLIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ZeroShotPrompts {
    /// CLIP's prompt ensemble over every template of the evaluated dataset's groups (default).
    #[default]
    Ensemble,
    /// One template.
    Template {
        /// The template, with `{}`.
        template: String,
    },
}

/// Everything about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The trained method.
    pub method: Method,
    /// The recipe the defaults came from (every setting it chose is recorded in its own field).
    #[serde(default)]
    pub recipe: RecipeName,
    /// The CLIP checkpoint.
    pub weights: std::path::PathBuf,
    /// What was given beside the checkpoint to load it (activation, open_clip architecture,
    /// heads), recorded so that the run reloads the same model (flattened: `activation` stays a
    /// top-level key, as older runs wrote it).
    #[serde(flatten)]
    pub load: mocoop_model::weights::LoadOptions,
    /// The precision the frozen encoders compute in (what trains stays f32; f16 adds dynamic loss
    /// scaling).
    #[serde(default)]
    pub precision: mocoop_model::Precision,
    /// The data.
    pub data: DataConfig,
    /// The prompts.
    pub mixture: MixtureConfig,
    /// Loss weights and options.
    pub loss: LossConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Whether the image encoder's `ln_1`/`ln_2` LayerNorms train (at `ln_lr_scale × lr`).
    pub ln_tuning: bool,
    /// Standard deviation of the Gaussian router noise added during training (0: none).
    pub router_noise: f32,
    /// Evaluate on the validation split after every epoch.
    pub validate: bool,
    /// The prompts of zero-shot CLIP (method `zero-shot` only).
    #[serde(default)]
    pub zero_shot: ZeroShotPrompts,
    /// Without LN tuning: image features of this many augmented views of each training image are
    /// computed once before training, and epoch `e` uses view `e mod views` (0: every step encodes
    /// its images).
    #[serde(default)]
    pub cached_views: usize,
    /// The deep prompts of VPT, IVLP, MaPLe and PromptSRC (`None` for the other methods).
    #[serde(default)]
    pub deep: Option<DeepPromptConfig>,
}

impl OptimConfig {
    /// Burn's SGD with these settings: PyTorch's momentum (no dampening) and L2 weight decay. The
    /// trainer and `mocoop bench` build their optimiser from it.
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(Some(WeightDecayConfig {
                penalty: self.weight_decay,
            }))
    }
}

impl TrainConfig {
    /// Checks settings that do not depend on data or weights.
    pub fn validate(&self) -> Result<(), String> {
        self.mixture.validate().map_err(|e| e.to_string())?;
        let o = &self.optim;
        if o.epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(format!("learning rate must be positive, got {}", o.lr));
        }
        if self.data.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        let l = &self.loss;
        for (name, value) in [
            ("lambda-text", l.lambda_text),
            ("lambda-gate", l.lambda_gate),
            ("lambda-lb", l.lambda_lb),
            ("lambda-kd", l.lambda_kd),
            ("lambda-kg", l.lambda_kg),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("--{name} must be finite and >= 0, got {value}"));
            }
        }
        if !(l.text_tau.is_finite() && l.text_tau > 0.0) {
            return Err(format!("--text-tau must be positive, got {}", l.text_tau));
        }
        if !self.mixture.router && (l.lambda_gate > 0.0 || l.lambda_lb > 0.0) {
            return Err(
                "the gating and load-balancing losses need a router (set their weights to 0)"
                    .into(),
            );
        }
        if !(self.router_noise.is_finite() && self.router_noise >= 0.0) {
            return Err(format!(
                "--router-noise must be >= 0, got {}",
                self.router_noise
            ));
        }
        if l.lambda_text > 0.0
            && l.text_target == TextTarget::Templates
            && self.mixture.num_experts() != 1
        {
            return Err(format!(
                "the text loss against single templates (LASP's) needs one soft prompt, not {}",
                self.mixture.num_experts()
            ));
        }
        if l.needs_hand_made() && l.hand_made.as_deref().is_none_or(|t| !t.contains("{}")) {
            return Err(
                "KgCoOp's guidance and ProGrad need a hand-made prompt with {} (--hand-made)"
                    .into(),
            );
        }
        if let Some(p) = &l.prograd {
            if !(p.lambda.is_finite() && p.lambda >= 0.0) {
                return Err(format!("--prograd-lambda must be >= 0, got {}", p.lambda));
            }
            if !(p.temperature.is_finite() && p.temperature > 0.0) {
                return Err(format!(
                    "--prograd-temperature must be positive, got {}",
                    p.temperature
                ));
            }
            if self.ln_tuning {
                return Err(
                    "ProGrad runs the text side twice per step and needs --ln-tuning false".into(),
                );
            }
        }
        if let Some(deep) = &self.deep {
            deep.validate()?;
            if (self.method == Method::Promptsrc) != deep.self_regulation.is_some() {
                return Err(format!(
                    "a {} run {} PromptSRC's self-regulation (`deep.self_regulation`)",
                    self.method,
                    if deep.self_regulation.is_some() {
                        "does not take"
                    } else {
                        "needs"
                    }
                ));
            }
        }
        if self.cached_views > 0 && self.ln_tuning {
            return Err(
                "--cached-views needs --ln-tuning false: with tuned LayerNorms the image features \
                 change every step"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Deep prompts on the two towers (VPT-deep, IVLP, MaPLe, PromptSRC): how many tokens each encoder
/// learns and through how many of its layers. A depth `J` puts learned tokens in the input of
/// layers `0..J`: the input's own at layer 0, and before each of layers `1..J` new ones in their
/// place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeepPromptConfig {
    /// Language context tokens right after SOT (0: the text side is the frozen hand-made prompt
    /// `"{ctx_init} {}."`, as VPT's).
    pub text_ctx: usize,
    /// Text layers whose context positions hold learned tokens.
    pub text_depth: usize,
    /// Visual tokens appended to the image sequence (MaPLe: as many as `text_ctx`).
    pub vision_ctx: usize,
    /// Image layers whose prompt positions hold learned tokens (MaPLe: `text_depth`).
    pub vision_depth: usize,
    /// Whether the visual tokens of each depth are a linear layer (text width → vision width, one
    /// per depth) of the language tokens of that depth (MaPLe), not tokens of their own.
    pub coupled: bool,
    /// The words the language context starts from: its first `text_ctx` tokens learn, the rest stay
    /// fixed before the class name (random `N(0, 0.02²)` tokens when it has fewer than
    /// `text_ctx`).
    pub ctx_init: String,
    /// PromptSRC's self-regulation (`None` for VPT, IVLP and MaPLe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_regulation: Option<SelfRegulation>,
}

/// PromptSRC's self-regulating constraints and its prompt aggregation: the weights of the L1
/// agreements with frozen CLIP's features (the KL agreement of the logits has weight 1) and the
/// Gaussian over epochs that weights each epoch's prompts in the aggregate the run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelfRegulation {
    /// Weight of `L_scl_text`, the mean absolute difference of the prompted class text features
    /// from frozen CLIP's template-ensemble features.
    pub text_weight: f32,
    /// Weight of `L_scl_image`, the mean absolute difference of the prompted image features from
    /// frozen CLIP's.
    pub image_weight: f32,
    /// Mean of the Gaussian over epoch numbers (1-based) of the aggregation.
    pub gpa_mean: f64,
    /// Its standard deviation.
    pub gpa_std: f64,
}

impl SelfRegulation {
    /// The official base-to-new configuration (`vit_b16_c2_ep20_batch4_4+4ctx`): text weight 25,
    /// image weight 10, the Gaussian at epoch 15 with standard deviation 1.
    pub fn official() -> Self {
        Self {
            text_weight: 25.0,
            image_weight: 10.0,
            gpa_mean: 15.0,
            gpa_std: 1.0,
        }
    }

    /// Checks the weights and the Gaussian.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("scl-text-weight", self.text_weight),
            ("scl-image-weight", self.image_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("--{name} must be finite and >= 0, got {value}"));
            }
        }
        if !self.gpa_mean.is_finite() {
            return Err(format!("--gpa-mean must be finite, got {}", self.gpa_mean));
        }
        if !(self.gpa_std.is_finite() && self.gpa_std > 0.0) {
            return Err(format!("--gpa-std must be positive, got {}", self.gpa_std));
        }
        Ok(())
    }
}

impl DeepPromptConfig {
    /// The official configuration of `method` (`None` for a method without deep prompts): MaPLe
    /// 2 coupled tokens to depth 9 (`vit_b16_c2_ep5_batch4_2ctx`), IVLP 2 + 2 tokens to depth 12
    /// (`vit_b16_c2_ep5_batch4_2+2ctx`), VPT 8 visual tokens to depth 12
    /// (`vit_b16_c2_ep5_batch4_4`), PromptSRC 4 + 4 independent tokens to depth 9 with its
    /// self-regulation (`vit_b16_c2_ep20_batch4_4+4ctx`), each from `"a photo of a"`.
    pub fn official(method: Method) -> Option<Self> {
        let (text_ctx, text_depth, vision_ctx, vision_depth, coupled) = match method {
            Method::Maple => (2, 9, 2, 9, true),
            Method::Ivlp => (2, 12, 2, 12, false),
            Method::Vpt => (0, 0, 8, 12, false),
            Method::Promptsrc => (4, 9, 4, 9, false),
            _ => return None,
        };
        Some(Self {
            text_ctx,
            text_depth,
            vision_ctx,
            vision_depth,
            coupled,
            ctx_init: "a photo of a".into(),
            self_regulation: (method == Method::Promptsrc).then(SelfRegulation::official),
        })
    }

    /// The same prompts with `depth` on both towers (and, for a coupled or vision-only run,
    /// `n_ctx` tokens on every tower that learns them): what `--prompt-depth` and `--n-ctx` set.
    pub fn with(mut self, depth: Option<usize>, n_ctx: Option<usize>) -> Self {
        if let Some(depth) = depth {
            self.vision_depth = depth;
            if self.text_ctx > 0 {
                self.text_depth = depth;
            }
        }
        if let Some(n) = n_ctx {
            self.vision_ctx = n;
            if self.text_ctx > 0 {
                self.text_ctx = n;
            }
        }
        self
    }

    /// Checks what does not depend on the encoders (their depths are checked when the method is
    /// built).
    pub fn validate(&self) -> Result<(), String> {
        if self.vision_ctx == 0 || self.vision_depth == 0 {
            return Err("deep prompts need --n-ctx and --prompt-depth of at least 1".into());
        }
        if (self.text_ctx == 0) != (self.text_depth == 0) {
            return Err(format!(
                "language prompts need both a length and a depth (got {} tokens, depth {})",
                self.text_ctx, self.text_depth
            ));
        }
        if self.coupled
            && (self.text_ctx != self.vision_ctx || self.text_depth != self.vision_depth)
        {
            return Err(format!(
                "MaPLe couples each visual token to a language token: the towers need the same \
                 tokens and depth (got {}/{} language, {}/{} vision)",
                self.text_ctx, self.text_depth, self.vision_ctx, self.vision_depth
            ));
        }
        if let Some(regulation) = &self.self_regulation {
            if self.text_ctx == 0 || self.coupled {
                return Err(
                    "PromptSRC regulates independent prompts on both towers (IVLP's)".into(),
                );
            }
            regulation.validate()?;
        }
        Ok(())
    }
}

/// The learning rate of epoch `epoch` (0-based): the constant warm-up rate for the first
/// `warmup_epochs`, then cosine decay from `lr` over `epochs` (Dassl's `ConstantWarmupScheduler`
/// around `CosineAnnealingLR(T_max = epochs)`, stepped once per epoch):
/// `lr · (1 + cos(π · (epoch − warmup) / epochs)) / 2`.
pub fn epoch_lr(optim: &OptimConfig, epoch: usize) -> f64 {
    if epoch < optim.warmup_epochs {
        return optim.warmup_lr;
    }
    let t = (epoch - optim.warmup_epochs) as f64 / optim.epochs as f64;
    optim.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_constant_warmup_then_cosine_per_epoch() {
        let optim = OptimConfig {
            lr: 0.002,
            ln_lr_scale: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            clip_norm: Some(1.0),
            epochs: 10,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            warmup_all_groups: false,
        };
        assert_eq!(epoch_lr(&optim, 0), 1e-5);
        assert!((epoch_lr(&optim, 1) - 0.002).abs() < 1e-12);
        let e5 = 0.002 * 0.5 * (1.0 + (std::f64::consts::PI * 0.4).cos());
        assert!((epoch_lr(&optim, 5) - e5).abs() < 1e-12);
        assert!(epoch_lr(&optim, 9) < epoch_lr(&optim, 8));
        let no_warmup = OptimConfig {
            warmup_epochs: 0,
            ..optim
        };
        assert!((epoch_lr(&no_warmup, 0) - 0.002).abs() < 1e-12);
    }

    #[test]
    fn names_parse_as_the_command_line_reads_them() {
        use clap::ValueEnum;
        // `ignore_case` on --method and --setting, as their parsers had before.
        assert_eq!(Method::from_str("MoCoOp", true), Ok(Method::Mocoop));
        assert_eq!(Method::from_str("zero-shot", true), Ok(Method::ZeroShot));
        assert_eq!(Method::from_str("zero_shot", true), Ok(Method::ZeroShot));
        assert_eq!(Setting::from_str("base2new", true), Ok(Setting::Base2new));
        assert_eq!(Setting::from_str("few-shot", true), Ok(Setting::Fewshot));
        assert!(Method::from_str("x", true).is_err());
        assert_eq!(
            GatePrototypes::from_str("class_agnostic", false),
            Ok(GatePrototypes::ClassAgnostic)
        );
        assert_eq!(
            GateTarget::from_str("topk", false),
            Ok(GateTarget::TopKUniform)
        );
        assert_eq!(
            GateTarget::from_str("softmax", false),
            Ok(GateTarget::SoftmaxBoost)
        );
        assert_eq!(
            TextClasses::from_str("train", false),
            Ok(TextClasses::Train)
        );
        // The command line's names are not serde's: config.json keeps snake_case.
        assert_eq!(
            serde_json::to_string(&Method::ZeroShot).unwrap(),
            "\"zero_shot\""
        );
        assert_eq!(
            serde_json::to_string(&GateTarget::TopKUniform).unwrap(),
            "\"top_k_uniform\""
        );
    }
}
