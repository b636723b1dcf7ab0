//! `mocoop train`: trains MoCoOp or CoOp (or evaluates zero-shot CLIP) on a dataset into a run
//! directory, then evaluates it on the test split(s).
//!
//! Defaults are the method's recipe for the dataset ([`Recipe::for_run`]: 50 epochs with 5 warm-up
//! epochs at batch size 32 and lr 0.032, scaled linearly with the batch size; for ImageNet 10
//! epochs, 1 warm-up epoch, batch size 1 and lr 0.002). Every explicit flag overrides these.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::json;

use mocoop_model::Precision;
use mocoop_model::prompt::{ContextCount, ExpertInit, LayoutOptions, MixtureConfig};
use mocoop_model::weights::LoadOptions;
use mocoop_train::config::{
    DataConfig, DeepPromptConfig, GatePrototypes, GateTarget, KgDistance, LossConfig, Method,
    OptimConfig, ProGradConfig, ProjectionScope, SelfRegulation, Setting, TextClasses, TrainConfig,
    ZeroShotPrompts,
};
use mocoop_train::inputs::template_groups_from;
use mocoop_train::recipe::{LrScaling, OfficialBehaviours, Recipe, RecipeName};
use mocoop_train::run;
use mocoop_train::{DeviceSplit, TrainOptions, TrainReport, resume, train};

use crate::device::{DeviceList, DeviceSpec, OnDevices};
use crate::groups_cmd::{RunGroups, write_run_groups};
use crate::model_args::{CheckpointArgs, LoadedClip};

/// How the single CoOp prompt is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CtxInit {
    /// The words of `--ctx-template` around `{}` (CoOp's "a photo of a").
    Template,
    /// `--n-ctx` random vectors.
    Random,
}

/// Where a run's template groups come from (`--groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsSource {
    /// A template-groups file.
    File(PathBuf),
    /// Suggested by `train` itself for the dataset's class names (`--groups auto`), and written
    /// into the run directory, which records that file.
    Auto,
}

impl std::str::FromStr for GroupsSource {
    type Err = String;

    /// `auto`, or the path of a file (`./auto` for a file of that name).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(if s == "auto" {
            Self::Auto
        } else {
            Self::File(PathBuf::from(s))
        })
    }
}

/// Trains prompts on a dataset (MoCoOp, CoOp) or evaluates zero-shot CLIP, into a run directory.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// CLIP checkpoint, in any format `mocoop classify --weights` reads (not with --resume: the
    /// run's config.json names it).
    #[arg(long, value_name = "PATH", required_unless_present = "resume")]
    weights: Option<PathBuf>,
    /// What the checkpoint may not record: activation, open_clip architecture, heads.
    #[command(flatten)]
    load: LoadOptions,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N; or several of one kind,
    /// comma-separated (cuda:0,cuda:1), to share every step between them (see --split).
    #[arg(long, default_value = "cpu", value_name = "DEVICE[,DEVICE…]")]
    device: DeviceList,
    /// Precision of the frozen encoders' compute: f32, or f16/bf16 on GPUs that support them.
    /// Prompts, router and LayerNorms train in f32; f16 adds dynamic loss scaling.
    #[arg(long, default_value = "f32", ignore_case = true)]
    precision: Precision,
    /// Dataset name (caltech101, dtd, eurosat, …, imagefolder, list).
    #[arg(long, required_unless_present = "resume")]
    dataset: Option<String>,
    /// Data root (the folder holding the dataset's folder, or the dataset folder itself).
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    root: Option<PathBuf>,
    /// Which classes to train on.
    #[arg(long, default_value = "base2new", ignore_case = true)]
    setting: Setting,
    /// Training images per class (0: all).
    #[arg(long, default_value_t = 16)]
    shots: usize,
    /// Seed of the few-shot draw, shuffling, augmentation and initialisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The run directory to create.
    #[arg(long, value_name = "RUN", required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Replace an existing run of the same method in --out.
    #[arg(long)]
    overwrite: bool,
    /// Continue the killed or interrupted run RUN from its newest intact checkpoint, with the
    /// settings in RUN/config.json; it ends with the prompts the uninterrupted run would have had.
    /// Only --device, --split and the run options (--quiet, --no-eval, --keep-checkpoints,
    /// --eval-batch-size) may be given with it.
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,

    /// The method and its settings.
    #[command(flatten)]
    pub flags: TrainFlags,
}

/// The arguments that may accompany `--resume` (they do not change what is trained).
const RESUME_COMPATIBLE: [&str; 8] = [
    "resume",
    "encode_all_experts",
    "split",
    "device",
    "quiet",
    "no_eval",
    "keep_checkpoints",
    "eval_batch_size",
];

/// The flags only some methods read, and those methods: one given with another method is an
/// error rather than silently ignored.
const METHOD_FLAGS: &[(&str, &[Method])] = {
    use Method::*;
    const MIXTURE: &[Method] = &[Mocoop];
    const TEXT_LOSS: &[Method] = &[Mocoop, Lasp];
    const SOFT: &[Method] = &[Coop, Cocoop, Kgcoop, Prograd, Lasp];
    const SHARED: &[Method] = &[Mocoop, Coop, Kgcoop, Prograd, Lasp];
    const DEEP: &[Method] = &[Vpt, Ivlp, Maple, Promptsrc];
    const PROMPTSRC: &[Method] = &[Promptsrc];
    const INDEPENDENT: &[Method] = &[Ivlp, Promptsrc];
    &[
        ("top_k", MIXTURE),
        ("renormalize", MIXTURE),
        ("router_noise", MIXTURE),
        ("lambda_text", TEXT_LOSS),
        ("lambda_gate", MIXTURE),
        ("lambda_lb", MIXTURE),
        ("text_tau", TEXT_LOSS),
        ("text_classes", TEXT_LOSS),
        ("gate_prototypes", MIXTURE),
        ("gate_target", MIXTURE),
        ("gate_target_grad", MIXTURE),
        ("encode_all_experts", MIXTURE),
        ("text_routed_only", MIXTURE),
        ("classify_without_period", MIXTURE),
        ("context_count", MIXTURE),
        ("groups", &[Mocoop, ZeroShot, Lasp]),
        ("ctx_init", SOFT),
        ("ctx_template", SOFT),
        (
            "n_ctx",
            &[
                Coop, Cocoop, Kgcoop, Prograd, Lasp, Vpt, Ivlp, Maple, Promptsrc,
            ],
        ),
        ("ctx_std", SOFT),
        ("text_bias", SHARED),
        ("lambda_kd", SHARED),
        ("lambda_kg", SHARED),
        ("kg_distance", SHARED),
        ("hand_made", &[Kgcoop, Prograd]),
        ("prograd_lambda", &[Prograd]),
        ("prograd_temperature", &[Prograd]),
        ("prograd_scope", &[Prograd]),
        ("zero_shot_template", &[ZeroShot]),
        // Deep prompts (VPT, IVLP, MaPLe, PromptSRC); --n-ctx sets their tokens.
        ("prompt_depth", DEEP),
        // One tower's prompts, where the towers' are independent (IVLP, PromptSRC).
        ("text_depth", INDEPENDENT),
        ("vision_depth", INDEPENDENT),
        ("text_n_ctx", INDEPENDENT),
        ("vision_n_ctx", INDEPENDENT),
        ("scl_text_weight", PROMPTSRC),
        ("scl_image_weight", PROMPTSRC),
        ("gpa_mean", PROMPTSRC),
        ("gpa_std", PROMPTSRC),
    ]
};

/// An error naming the first flag in `given` that `method` does not read.
fn check_method_flags(method: Method, given: &[String]) -> Result<()> {
    for (flag, methods) in METHOD_FLAGS {
        if given.iter().any(|g| g == flag) && !methods.contains(&method) {
            let readers: Vec<String> = methods.iter().map(Method::to_string).collect();
            bail!(
                "--{} does not apply to --method {method} (only to {})",
                flag.replace('_', "-"),
                readers.join(", ")
            );
        }
    }
    Ok(())
}

/// The method and every hyper-parameter of a run (shared by `train` and `protocol`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainFlags {
    /// The method to train (its recipe gives the defaults below).
    #[arg(long, default_value = "mocoop", ignore_case = true)]
    pub method: Method,
    /// Which reading the defaults follow: default (the method description's) or official (the
    /// official MoCoOp code's configuration and behaviours, each also a flag of its own:
    /// --classify-without-period, --context-count, --official-templates, --text-routed-only,
    /// --warmup-all-groups, --gate-target, --gate-target-grad, and f16 on GPUs; mocoop only).
    #[arg(long, value_enum, default_value_t = RecipeName::Default)]
    pub recipe: RecipeName,
    /// Template groups file (TOML, same format as assets/template-groups.toml) for a custom
    /// dataset, or auto (`train` only): groups suggested for the dataset's class names from
    /// CLIP's 80 ImageNet templates, as `mocoop groups suggest` makes them, kept in RUN/groups.toml.
    #[arg(long, value_name = "FILE|auto")]
    pub groups: Option<GroupsSource>,

    // ---- prompts and router
    /// Experts mixed per image (K).
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Learn the shared text bias w (default: on for mocoop and lasp, off for coop).
    #[arg(long, value_name = "BOOL")]
    text_bias: Option<bool>,
    /// Re-normalise the mixed class features (decision; default off).
    #[arg(long)]
    renormalize: bool,
    /// Std of the Gaussian noise added to router logits in training (0: none).
    #[arg(long, default_value_t = 0.0)]
    router_noise: f32,
    /// CoOp context initialisation.
    #[arg(long, value_enum, default_value_t = CtxInit::Template)]
    ctx_init: CtxInit,
    /// Template whose words initialise the soft prompt of coop, kgcoop, prograd and lasp [default: "a
    /// photo of a {}."; prograd: its hand-made prompt, as its official code does].
    #[arg(long, value_name = "TEMPLATE")]
    ctx_template: Option<String>,
    /// Number of random CoOp context vectors; for vpt, ivlp, maple and promptsrc, the prompt tokens
    /// of each tower that learns them [default: their official configurations: maple 2, ivlp
    /// 2 + 2, vpt 8, promptsrc 4 + 4].
    #[arg(long, default_value_t = 4)]
    n_ctx: usize,
    /// Std of random context vectors.
    #[arg(long, default_value_t = 0.02)]
    ctx_std: f32,
    /// Classification prompts without the templates' final period, kept in the text-level
    /// loss's and the hard prompts (the official code; recipe: official true, default false).
    #[arg(long, value_name = "BOOL")]
    classify_without_period: Option<bool>,
    /// Count the learnable contexts in BPE tokens or in space-separated words, laid over the
    /// tokenised prompt as the official code does (recipe: official words, default tokens).
    #[arg(long, value_enum)]
    context_count: Option<ContextCount>,
    /// Without --groups: the official code's template groups where its dataset configurations
    /// differ from the built-in table (Food101's `a photo of a  {}.` with its double space, the
    /// ImageNet domain targets' 16 groups) (recipe: official true, default false).
    #[arg(long, value_name = "BOOL")]
    official_templates: Option<bool>,
    /// Zero-shot CLIP with one template instead of the ensemble of the dataset's templates.
    #[arg(long, value_name = "TEMPLATE")]
    zero_shot_template: Option<String>,

    // ---- deep prompts (vpt, ivlp, maple, promptsrc)
    /// Layers of each encoder whose prompt positions hold learned tokens [default: maple and
    /// promptsrc 9, ivlp and vpt 12].
    #[arg(long, value_name = "J")]
    prompt_depth: Option<usize>,
    /// Text encoder layers with learned tokens, where the towers' prompts are independent
    /// (ivlp, promptsrc), overriding --prompt-depth there.
    #[arg(long, value_name = "J")]
    text_depth: Option<usize>,
    /// Image encoder layers with learned tokens (ivlp, promptsrc), overriding --prompt-depth there.
    #[arg(long, value_name = "J")]
    vision_depth: Option<usize>,
    /// Learned language tokens (ivlp, promptsrc), overriding --n-ctx there.
    #[arg(long, value_name = "N")]
    text_n_ctx: Option<usize>,
    /// Learned visual tokens (ivlp, promptsrc), overriding --n-ctx there.
    #[arg(long, value_name = "N")]
    vision_n_ctx: Option<usize>,
    /// PromptSRC's weight of the L1 agreement of the prompted class text features with frozen
    /// CLIP's template-ensemble features [default: 25].
    #[arg(long, value_name = "W")]
    scl_text_weight: Option<f32>,
    /// PromptSRC's weight of the L1 agreement of the prompted image features with frozen CLIP's
    /// [default: 10].
    #[arg(long, value_name = "W")]
    scl_image_weight: Option<f32>,
    /// Mean (an epoch number, from 1) of the Gaussian that weights each epoch's prompts in
    /// PromptSRC's aggregate [default: 15].
    #[arg(long, value_name = "EPOCH")]
    gpa_mean: Option<f64>,
    /// Standard deviation of that Gaussian, in epochs [default: 1].
    #[arg(long, value_name = "EPOCHS")]
    gpa_std: Option<f64>,

    // ---- losses
    /// Weight of the text-level loss: mocoop's grouped one, lasp's against every template
    /// (default: 5 for both, 0 for coop).
    #[arg(long)]
    lambda_text: Option<f32>,
    /// Weight of the hard-prompt-guided gating loss (default: 1 for mocoop, 0 for coop).
    #[arg(long)]
    lambda_gate: Option<f32>,
    /// Weight of the load-balancing loss.
    #[arg(long, default_value_t = 0.0)]
    lambda_lb: f32,
    /// Weight of the distillation towards zero-shot CLIP logits.
    #[arg(long, default_value_t = 0.0)]
    lambda_kd: f32,
    /// Temperature of the text-level loss (decision; mocoop's published code uses 1, lasp's
    /// multiplies by CLIP's logit scale: 0.01).
    #[arg(long)]
    text_tau: Option<f32>,
    /// Classes contrasted by the text-level loss (decision): all class names, or the training ones.
    #[arg(long, default_value = "all")]
    text_classes: TextClasses,
    /// Prototypes of the gating target (decision): per-class or class-agnostic.
    #[arg(long, default_value = "per-class")]
    gate_prototypes: GatePrototypes,
    /// Form of the gating target (decision): top-k (uniform) or softmax (published code's form)
    /// (recipe: official softmax, default top-k).
    #[arg(long)]
    gate_target: Option<GateTarget>,
    /// Let gradients flow through the gating target (decision; recipe: official true, default
    /// false, i.e. detached).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    gate_target_grad: Option<bool>,
    /// The text-level loss regularises only the experts some image of the step is routed to,
    /// the others entering it with zero features (recipe: official below batch size 4, as its
    /// code; default false).
    #[arg(long, value_name = "BOOL")]
    text_routed_only: Option<bool>,
    /// The hand-made prompt of kgcoop's guidance and prograd's zero-shot teacher (recipe: each
    /// method's official prompt for the dataset).
    #[arg(long, value_name = "TEMPLATE")]
    hand_made: Option<String>,
    /// Weight of KgCoOp's knowledge guidance (recipe: 8 for kgcoop, 0 otherwise).
    #[arg(long)]
    lambda_kg: Option<f32>,
    /// The distance of KgCoOp's guidance (decision): cosine (1 − cos, the official code) or l2
    /// (squared, the paper).
    #[arg(long, value_enum, default_value_t = KgDistance::Cosine)]
    kg_distance: KgDistance,
    /// ProGrad's λ, the share of the opposing gradient component removed (recipe: 1).
    #[arg(long)]
    prograd_lambda: Option<f32>,
    /// ProGrad's distillation temperature (recipe: 1).
    #[arg(long)]
    prograd_temperature: Option<f32>,
    /// Where ProGrad compares the gradients (decision): per-parameter (official) or global.
    #[arg(long, value_enum)]
    prograd_scope: Option<ProjectionScope>,

    // ---- optimisation (defaults: the recipe of the method and dataset, `mocoop_train::recipe`)
    /// Training epochs (recipe: 50; ImageNet 10).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs at the constant warm-up rate (recipe: 5 of 50, ImageNet 1 of 10; a shorter run
    /// warms up for its share of them, always short of the whole run).
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// The constant warm-up learning rate (recipe: 1e-5).
    #[arg(long)]
    warmup_lr: Option<f64>,
    /// Images per step (recipe: 32; ImageNet 1).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate, used as given (default: --base-lr scaled by --lr-scaling).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate at the recipe's batch size (recipe: 0.032 at 32; ImageNet 0.002 at 1).
    #[arg(long)]
    base_lr: Option<f64>,
    /// How --base-lr follows --batch-size (recipe: linear; ImageNet none).
    #[arg(long)]
    lr_scaling: Option<LrScaling>,
    /// SGD momentum, no dampening (recipe: 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay (recipe: 5e-4).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm clipping threshold, 0: off (recipe: 1).
    #[arg(long)]
    clip_norm: Option<f32>,
    /// Tune the image encoder's ln_1/ln_2 LayerNorms (recipe: on for mocoop, off for coop).
    #[arg(long, value_name = "BOOL")]
    ln_tuning: Option<bool>,
    /// Learning-rate multiplier of the image LayerNorms (recipe: 0.1).
    #[arg(long)]
    ln_lr_scale: Option<f64>,
    /// During the warm-up every parameter group trains at the warm-up rate, the image LayerNorms
    /// included, as Dassl's constant warm-up does (recipe: official true, default false: they
    /// get --ln-lr-scale of it).
    #[arg(long, value_name = "BOOL")]
    warmup_all_groups: Option<bool>,
    /// Encode N augmented views of every training image once, before training, and train on
    /// those features (epoch e uses view e mod N): steps then cost only the text side. Needs
    /// --ln-tuning false (the CoOp default); N >= --epochs sees the same views as uncached training.
    #[arg(long, default_value_t = 0, value_name = "N")]
    cached_views: usize,

    // ---- run
    /// Evaluate on the validation split after every epoch.
    #[arg(long)]
    validate: bool,
    /// Image decoding threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Do not evaluate on the test split(s) after training.
    #[arg(long)]
    no_eval: bool,
    /// Leave out training images that cannot be read (their count and paths are reported at the
    /// end) instead of stopping the run at the first one.
    #[arg(long)]
    skip_bad_images: bool,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 100)]
    eval_batch_size: usize,
    /// Epoch checkpoints kept in RUN/checkpoints.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Encode every expert's prompts at every step. By default a step without the text-level loss
    /// (--lambda-text 0) encodes only the experts its images are routed to: the same result,
    /// cheaper when E × C is large and batches are small (ImageNet).
    #[arg(long)]
    encode_all_experts: bool,
    /// With several devices: batch gives each a part of every batch (data parallel); classes
    /// keeps the step on the first device and gives each device a share of the E × C prompts
    /// to encode (for many classes, ImageNet, where the prompts take the time).
    #[arg(long, value_enum, default_value_t = DeviceSplit::Batch)]
    split: DeviceSplit,
    /// The flags typed on the command line (filled in by `main`): checked against `--resume` and
    /// against the method.
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Which data one run trains on.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Dataset name.
    pub dataset: String,
    /// Data root.
    pub root: PathBuf,
    /// Base-to-new or all classes.
    pub setting: Setting,
    /// Images per class.
    pub shots: usize,
    /// Seed.
    pub seed: u64,
}

impl TrainFlags {
    /// Decoding threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Images per evaluation batch.
    pub fn eval_batch_size(&self) -> usize {
        self.eval_batch_size
    }

    /// Run options (everything not in the configuration).
    pub fn options(&self, overwrite: bool) -> TrainOptions {
        TrainOptions {
            quiet: self.quiet,
            evaluate: !self.no_eval,
            overwrite,
            keep_checkpoints: self.keep_checkpoints,
            eval_batch_size: self.eval_batch_size,
            stop: None,
            encode_all_experts: self.encode_all_experts,
            split: self.split,
            progress: None,
        }
    }

    /// The method's recipe for `dataset` with the flags that change it applied.
    fn recipe(&self, dataset: &str) -> Result<Recipe> {
        let recipe =
            Recipe::named(self.recipe, self.method, dataset).map_err(anyhow::Error::msg)?;
        let official = recipe.official;
        Ok(Recipe {
            warmup_lr: self.warmup_lr.unwrap_or(recipe.warmup_lr),
            base_lr: self.base_lr.unwrap_or(recipe.base_lr),
            lr_scaling: self.lr_scaling.unwrap_or(recipe.lr_scaling),
            momentum: self.momentum.unwrap_or(recipe.momentum),
            weight_decay: self.weight_decay.unwrap_or(recipe.weight_decay),
            clip_norm: self
                .clip_norm
                .map_or(recipe.clip_norm, |c| (c > 0.0).then_some(c)),
            ln_lr_scale: self.ln_lr_scale.unwrap_or(recipe.ln_lr_scale),
            ln_tuning: self.ln_tuning.unwrap_or(recipe.ln_tuning),
            loss: LossConfig {
                lambda_text: self.lambda_text.unwrap_or(recipe.loss.lambda_text),
                lambda_gate: self.lambda_gate.unwrap_or(recipe.loss.lambda_gate),
                lambda_lb: self.lambda_lb,
                lambda_kd: self.lambda_kd,
                text_tau: self.text_tau.unwrap_or(recipe.loss.text_tau),
                text_classes: self.text_classes,
                text_target: recipe.loss.text_target,
                gate_prototypes: self.gate_prototypes,
                gate_target: self.gate_target.unwrap_or(recipe.loss.gate_target),
                gate_target_detached: self
                    .gate_target_grad
                    .map_or(recipe.loss.gate_target_detached, |grad| !grad),
                text_routed_only: false,
                hand_made: self.hand_made.clone().or(recipe.loss.hand_made.clone()),
                lambda_kg: self.lambda_kg.unwrap_or(recipe.loss.lambda_kg),
                kg_distance: self.kg_distance,
                prograd: recipe.loss.prograd.map(|p| ProGradConfig {
                    lambda: self.prograd_lambda.unwrap_or(p.lambda),
                    temperature: self.prograd_temperature.unwrap_or(p.temperature),
                    scope: self.prograd_scope.unwrap_or(p.scope),
                }),
            },
            official: OfficialBehaviours {
                layout: LayoutOptions {
                    context_count: self.context_count.unwrap_or(official.layout.context_count),
                    classify_without_period: self
                        .classify_without_period
                        .unwrap_or(official.layout.classify_without_period),
                },
                warmup_all_groups: self.warmup_all_groups.unwrap_or(official.warmup_all_groups),
                official_templates: self
                    .official_templates
                    .unwrap_or(official.official_templates),
                ..official
            },
            ..recipe
        })
    }

    /// The checkpoint's loading arguments with the precision the recipe asks for on `device`:
    /// the official recipe computes the encoders in f16 on GPU backends (its AMP) unless
    /// `--precision` is given, and in f32 on the CPU (where PyTorch's autocast and GradScaler,
    /// which the official code uses, disable themselves).
    pub fn checkpoint_for(
        &self,
        checkpoint: &CheckpointArgs,
        device: &DeviceSpec,
    ) -> Result<CheckpointArgs> {
        // The behaviours do not depend on the dataset.
        let official = Recipe::named(self.recipe, self.method, "")
            .map_err(anyhow::Error::msg)?
            .official;
        let mut checkpoint = checkpoint.clone();
        let gpu = !matches!(device, DeviceSpec::Cpu);
        if official.f16_on_gpu && gpu && !self.given.iter().any(|g| g == "precision") {
            checkpoint.precision = Precision::F16;
        }
        Ok(checkpoint)
    }

    /// The schedule of `recipe` for the run's batch size, with the epochs and rates given on the
    /// command line; warns when an explicit warm-up leaves no epoch at the real rate.
    fn optim(&self, recipe: &Recipe, batch_size: usize) -> OptimConfig {
        let epochs = self.epochs.unwrap_or(recipe.epochs);
        let mut optim = recipe.optim(batch_size, epochs);
        if let Some(lr) = self.lr {
            optim.lr = lr;
        }
        if let Some(warmup) = self.warmup_epochs {
            if warmup >= epochs {
                eprintln!(
                    "warning: --warmup-epochs {warmup} covers all {epochs} epochs: the run never \
                     leaves the warm-up learning rate {}",
                    optim.warmup_lr
                );
            }
            optim.warmup_epochs = warmup;
        }
        optim
    }

    /// The prompts of the method on `run`'s dataset, under `recipe` (the one in effect: the
    /// flags applied).
    fn mixture(&self, run: &RunData, recipe: &Recipe) -> Result<MixtureConfig> {
        let mut mixture = match self.method {
            Method::Mocoop | Method::ZeroShot => {
                let official = recipe.official.official_templates;
                let file = self.groups_file()?;
                let groups = template_groups_from(file.as_deref(), &run.dataset, official)?;
                MixtureConfig::mocoop(&groups, self.top_k, run.seed)
            }
            Method::Coop | Method::Cocoop | Method::Kgcoop | Method::Prograd | Method::Lasp => {
                // ProGrad's context starts from the hand-made prompt in effect (its teacher's).
                let own = (self.method == Method::Prograd)
                    .then(|| recipe.loss.hand_made.clone())
                    .flatten();
                let template = self.ctx_template.clone().or(own);
                let init = match self.ctx_init {
                    CtxInit::Template => ExpertInit::Template {
                        template: template.unwrap_or_else(|| "a photo of a {}.".into()),
                    },
                    CtxInit::Random => ExpertInit::Random {
                        n_ctx: self.n_ctx,
                        std: self.ctx_std,
                    },
                };
                MixtureConfig {
                    text_bias: self.method == Method::Lasp,
                    ..MixtureConfig::coop(init, run.seed)
                }
            }
            // Their prompts are `TrainConfig::deep`; the mixture entry is CoOp's default, unused.
            Method::Vpt | Method::Ivlp | Method::Maple | Method::Promptsrc => MixtureConfig::coop(
                ExpertInit::Template {
                    template: "a photo of a {}.".into(),
                },
                run.seed,
            ),
        };
        mixture.renormalize = self.renormalize;
        if self.method == Method::Mocoop {
            mixture.layout = recipe.official.layout;
        }
        if let Some(bias) = self.text_bias {
            mixture.text_bias = bias;
        }
        Ok(mixture)
    }

    /// The deep prompts of a VPT, IVLP, MaPLe or PromptSRC run: the official configuration with
    /// `--prompt-depth` and `--n-ctx` where given, then one tower's own flags, and PromptSRC's
    /// weights and Gaussian.
    fn deep(&self) -> Option<DeepPromptConfig> {
        let n_ctx = self
            .given
            .iter()
            .any(|g| g == "n_ctx")
            .then_some(self.n_ctx);
        let mut deep = DeepPromptConfig::official(self.method)?.with(self.prompt_depth, n_ctx);
        deep.text_depth = self.text_depth.unwrap_or(deep.text_depth);
        deep.vision_depth = self.vision_depth.unwrap_or(deep.vision_depth);
        deep.text_ctx = self.text_n_ctx.unwrap_or(deep.text_ctx);
        deep.vision_ctx = self.vision_n_ctx.unwrap_or(deep.vision_ctx);
        deep.self_regulation = deep.self_regulation.map(|r| SelfRegulation {
            text_weight: self.scl_text_weight.unwrap_or(r.text_weight),
            image_weight: self.scl_image_weight.unwrap_or(r.image_weight),
            gpa_mean: self.gpa_mean.unwrap_or(r.gpa_mean),
            gpa_std: self.gpa_std.unwrap_or(r.gpa_std),
        });
        Some(deep)
    }

    /// The run's groups file: `--groups FILE`, or none for the built-in table. `--groups auto`
    /// must have been turned into its file by `train` first, which alone has the CLIP and the run
    /// directory it needs.
    fn groups_file(&self) -> Result<Option<PathBuf>> {
        match &self.groups {
            None => Ok(None),
            Some(GroupsSource::File(path)) => Ok(Some(path.clone())),
            Some(GroupsSource::Auto) => bail!(
                "--groups auto is for `mocoop train` only: write the groups with `mocoop groups \
                 suggest` and pass that file to --groups"
            ),
        }
    }

    /// The run configuration these flags describe for one dataset and seed.
    pub fn config(&self, checkpoint: &CheckpointArgs, run: &RunData) -> Result<TrainConfig> {
        check_method_flags(self.method, &self.given)?;
        let mut recipe = self.recipe(&run.dataset)?;
        let batch_size = self.batch_size.unwrap_or(recipe.batch_size);
        recipe.loss.text_routed_only = self
            .text_routed_only
            .unwrap_or(batch_size < recipe.official.routed_text_below_batch);
        let data = DataConfig {
            dataset: run.dataset.clone(),
            root: run.root.clone(),
            setting: run.setting,
            shots: run.shots,
            seed: run.seed,
            batch_size,
            workers: self.workers,
            groups_file: self.groups_file()?,
            skip_bad_images: self.skip_bad_images,
            official_templates: recipe.official.official_templates,
        };
        let config = TrainConfig {
            method: self.method,
            recipe: self.recipe,
            weights: checkpoint.weights.clone(),
            load: checkpoint.load.clone(),
            precision: checkpoint.precision,
            data,
            mixture: self.mixture(run, &recipe)?,
            optim: self.optim(&recipe, batch_size),
            loss: recipe.loss,
            ln_tuning: recipe.ln_tuning,
            router_noise: self.router_noise,
            validate: self.validate,
            zero_shot: match &self.zero_shot_template {
                Some(template) => ZeroShotPrompts::Template {
                    template: template.clone(),
                },
                None => ZeroShotPrompts::Ensemble,
            },
            cached_views: self.cached_views,
            deep: self.deep(),
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

impl TrainArgs {
    /// The devices the user asked for.
    pub fn devices(&self) -> &DeviceList {
        &self.device
    }

    /// Continues the run `dir` (`--resume`).
    fn resume<B: AutodiffBackend>(
        &self,
        dir: &Path,
        options: &TrainOptions,
        devices: &[B::Device],
    ) -> Result<TrainReport> {
        if let Some(other) = self
            .flags
            .given
            .iter()
            .find(|id| !RESUME_COMPATIBLE.contains(&id.as_str()))
        {
            bail!(
                "--{} cannot be combined with --resume: the run's settings come from {}",
                other.replace('_', "-"),
                dir.join(run::CONFIG_FILE).display()
            );
        }
        let config = run::read_config(dir, None)?;
        let checkpoint = CheckpointArgs::of_run(&config, None);
        let loaded = checkpoint.load::<B>(self.device.main(), &devices[0])?;
        resume(dir, loaded.clip, &loaded.tokenizer, options, devices)
            .with_context(|| format!("resuming {}", dir.display()))
    }

    /// Starts a new run.
    fn start<B: AutodiffBackend>(
        &self,
        options: &TrainOptions,
        devices: &[B::Device],
    ) -> Result<TrainReport> {
        let (Some(weights), Some(dataset), Some(root), Some(out)) =
            (&self.weights, &self.dataset, &self.root, &self.out)
        else {
            bail!("--weights, --dataset, --root and --out are needed (or --resume RUN)");
        };
        let checkpoint = CheckpointArgs {
            weights: weights.clone(),
            load: self.load.clone(),
            precision: self.precision,
        };
        let checkpoint = self.flags.checkpoint_for(&checkpoint, self.device.main())?;
        let run = RunData {
            dataset: dataset.clone(),
            root: root.clone(),
            setting: self.setting,
            shots: self.shots,
            seed: self.seed,
        };
        let (config, loaded) = if self.flags.groups == Some(GroupsSource::Auto) {
            check_method_flags(self.flags.method, &self.flags.given)?;
            let loaded = checkpoint.load::<B>(self.device.main(), &devices[0])?;
            let flags = self.auto_groups(&loaded, &run, out, weights, &devices[0])?;
            (flags.config(&checkpoint, &run)?, loaded)
        } else {
            let config = self.flags.config(&checkpoint, &run)?;
            (
                config,
                checkpoint.load::<B>(self.device.main(), &devices[0])?,
            )
        };
        train(
            config,
            loaded.clip,
            &loaded.tokenizer,
            out,
            options,
            devices,
        )
        .with_context(|| format!("training into {}", out.display()))
    }
}

impl TrainArgs {
    /// `--groups auto`: the flags with the groups suggested for the dataset's class names
    /// (all of them, base and new: only names are read) written into the run directory.
    fn auto_groups<B: Backend>(
        &self,
        loaded: &LoadedClip<B>,
        run: &RunData,
        out: &Path,
        weights: &Path,
        device: &B::Device,
    ) -> Result<TrainFlags> {
        let dataset = mocoop_data::load_dataset(&run.dataset, &run.root)?;
        let target = RunGroups {
            run: out,
            method: self.flags.method,
            overwrite: self.overwrite,
            dataset: &run.dataset,
            weights,
        };
        let (path, suggestion) =
            write_run_groups(loaded, &dataset.all_classnames, &target, device)?;
        eprintln!(
            "note: --groups auto: {} groups of {} templates in {}",
            suggestion.groups.len(),
            suggestion.templates,
            path.display()
        );
        Ok(TrainFlags {
            groups: Some(GroupsSource::File(path)),
            ..self.flags.clone()
        })
    }
}

impl OnDevices for TrainArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        let mut options = self.flags.options(self.overwrite);
        options.stop = Some(crate::interrupt::stop_flag());
        let report = match &self.resume {
            Some(dir) => self.resume::<B>(dir, &options, &devices)?,
            None => self.start::<B>(&options, &devices)?,
        };
        for note in &report.notes {
            eprintln!("note: {note}");
        }
        let written = crate::report::run::write::<B::InnerBackend>(
            &report,
            self.devices().main(),
            &devices[0],
        )?;
        eprintln!("report: {}", written.display());
        let last = report.epochs.last();
        let out = json!({
            "run": report.run,
            "steps": report.steps,
            "final_epoch": last,
            "results": report.results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        flags: TrainFlags,
    }

    /// The configuration `mocoop train` builds for `dataset` with `args`.
    fn config(dataset: &str, args: &[&str]) -> TrainConfig {
        let flags = Flags::try_parse_from([&["train"], args].concat())
            .unwrap()
            .flags;
        let checkpoint = CheckpointArgs {
            weights: "clip.safetensors".into(),
            load: LoadOptions::default(),
            precision: Precision::F32,
        };
        let run = RunData {
            dataset: dataset.into(),
            root: "data".into(),
            setting: Setting::Base2new,
            shots: 16,
            seed: 1,
        };
        flags.config(&checkpoint, &run).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn defaults_are_the_recipe_of_method_and_dataset() {
        let c = config("dtd", &[]);
        assert_eq!(c.data.batch_size, 32);
        assert!(close(c.optim.lr, 0.032));
        assert_eq!((c.optim.epochs, c.optim.warmup_epochs), (50, 5));
        assert_eq!((c.optim.momentum, c.optim.weight_decay), (0.9, 5e-4));
        assert_eq!((c.optim.clip_norm, c.optim.warmup_lr), (Some(1.0), 1e-5));
        assert!(c.ln_tuning);
        assert_eq!(c.loss, LossConfig::mocoop());

        let c = config("imagenet", &[]);
        assert_eq!(c.data.batch_size, 1);
        assert!(close(c.optim.lr, 0.002));
        assert_eq!((c.optim.epochs, c.optim.warmup_epochs), (10, 1));

        let c = config("dtd", &["--method", "coop"]);
        assert!(!c.ln_tuning);
        assert_eq!(c.loss, LossConfig::coop());
    }

    #[test]
    fn lasp_is_coop_with_the_text_bias_layernorms_and_its_text_loss() {
        let c = config("dtd", &["--method", "lasp"]);
        assert_eq!(c.loss, LossConfig::lasp());
        assert!(c.ln_tuning && c.mixture.text_bias && !c.mixture.router);
        assert_eq!(c.mixture.num_experts(), 1);
        assert_eq!((c.data.batch_size, c.optim.epochs), (32, 25));
        let c = config("dtd", &["--method", "lasp", "--text-tau", "0.5"]);
        assert_eq!(c.loss.text_tau, 0.5);
        assert_eq!(config("dtd", &[]).loss.text_tau, 1.0);
    }

    #[test]
    fn deep_prompt_methods_take_their_official_prompts_and_the_depth_and_length_flags() {
        let deep = |args: &[&str], given: &[&str]| {
            let mut flags = Flags::try_parse_from([&["train"], args].concat())
                .unwrap()
                .flags;
            flags.given = given.iter().map(|g| g.to_string()).collect();
            flags.deep()
        };
        let maple = deep(&["--method", "maple"], &[]).unwrap();
        assert_eq!(maple, DeepPromptConfig::official(Method::Maple).unwrap());
        assert_eq!(
            (maple.text_ctx, maple.text_depth, maple.coupled),
            (2, 9, true)
        );
        let args = ["--method", "maple", "--prompt-depth", "3", "--n-ctx", "4"];
        let maple = deep(&args, &["prompt_depth", "n_ctx"]).unwrap();
        assert_eq!(
            (
                maple.text_ctx,
                maple.text_depth,
                maple.vision_ctx,
                maple.vision_depth
            ),
            (4, 3, 4, 3)
        );
        // VPT learns no language tokens, whatever the flags.
        let vpt = deep(&["--method", "vpt", "--n-ctx", "5"], &["n_ctx"]).unwrap();
        assert_eq!((vpt.text_ctx, vpt.text_depth, vpt.vision_ctx), (0, 0, 5));
        assert_eq!(deep(&["--method", "coop"], &[]), None);
        // IVLP's towers are independent: each takes flags of its own over the shared ones.
        let args = [
            "--method",
            "ivlp",
            "--prompt-depth",
            "5",
            "--vision-depth",
            "3",
            "--text-n-ctx",
            "6",
        ];
        let ivlp = deep(&args, &["prompt_depth", "vision_depth", "text_n_ctx"]).unwrap();
        assert_eq!(
            (
                ivlp.text_ctx,
                ivlp.text_depth,
                ivlp.vision_ctx,
                ivlp.vision_depth
            ),
            (6, 5, 2, 3)
        );
        let err = check_method_flags(Method::Maple, &["vision_depth".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--vision-depth does not apply to --method maple (only to ivlp, promptsrc)"
        );
        let c = config("dtd", &["--method", "ivlp"]);
        assert_eq!((c.data.batch_size, c.optim.epochs), (4, 5));
        assert!(close(c.optim.lr, 0.0035) && !c.ln_tuning);
    }

    #[test]
    fn promptsrc_takes_its_official_configuration_and_its_own_flags() {
        let c = config("dtd", &["--method", "promptsrc"]);
        assert_eq!(c.deep, DeepPromptConfig::official(Method::Promptsrc));
        assert_eq!((c.data.batch_size, c.optim.epochs), (4, 20));
        assert!(close(c.optim.lr, 0.0025) && !c.ln_tuning);
        let args = [
            "--method",
            "promptsrc",
            "--scl-text-weight",
            "5",
            "--scl-image-weight",
            "2",
            "--gpa-mean",
            "3",
            "--gpa-std",
            "0.5",
        ];
        let own = config("dtd", &args).deep.unwrap().self_regulation.unwrap();
        let want = (own.text_weight, own.image_weight, own.gpa_mean, own.gpa_std);
        assert_eq!(want, (5.0, 2.0, 3.0, 0.5));
        // Its flags belong to it alone.
        let given = vec!["gpa_std".to_string()];
        let err = check_method_flags(Method::Maple, &given).unwrap_err();
        assert!(
            err.to_string()
                .contains("--gpa-std does not apply to --method maple (only to promptsrc)"),
            "{err}"
        );
        assert!(check_method_flags(Method::Promptsrc, &given).is_ok());
    }

    #[test]
    fn prograds_context_starts_from_the_hand_made_prompt_in_effect() {
        let init = |args: &[&str]| config("dtd", args).mixture.experts;
        let template = |t: &str| vec![ExpertInit::Template { template: t.into() }];
        let prograd = ["--method", "prograd"];
        assert_eq!(init(&prograd), template("a texture of {}."));
        let own = "a close-up photo of a {}.";
        let given = [&prograd[..], &["--hand-made", own]].concat();
        assert_eq!(init(&given), template(own));
        assert_eq!(config("dtd", &given).loss.hand_made.as_deref(), Some(own));
        // An explicit context template still wins; KgCoOp's context stays CoOp's.
        let explicit = [&given[..], &["--ctx-template", "a photo of a {}."]].concat();
        assert_eq!(init(&explicit), template("a photo of a {}."));
        let kgcoop = ["--method", "kgcoop", "--hand-made", own];
        assert_eq!(init(&kgcoop), template("a photo of a {}."));
    }

    #[test]
    fn the_learning_rate_follows_the_batch_size_as_the_recipe_says() {
        let lr = |dataset, args: &[&str]| config(dataset, args).optim.lr;
        assert!(close(lr("dtd", &["--batch-size", "8"]), 0.008));
        let unscaled = ["--batch-size", "8", "--lr-scaling", "none"];
        assert!(close(lr("dtd", &unscaled), 0.032));
        let base = ["--batch-size", "64", "--base-lr", "0.01"];
        assert!(close(lr("dtd", &base), 0.02));
        assert!(close(lr("dtd", &["--lr", "0.5", "--batch-size", "8"]), 0.5));
        assert!(close(lr("imagenet", &["--batch-size", "4"]), 0.002));
        assert!(close(lr("imagenet", &["--base-lr", "0.01"]), 0.01));
    }

    #[test]
    fn a_short_run_warms_up_for_less_unless_told() {
        let warmup = |args: &[&str]| config("dtd", args).optim.warmup_epochs;
        assert_eq!(warmup(&["--epochs", "2"]), 1);
        assert_eq!(warmup(&["--epochs", "1"]), 0);
        assert_eq!(warmup(&["--epochs", "20"]), 2);
        // An explicit warm-up is kept, even one as long as the run (with a warning on stderr).
        assert_eq!(warmup(&["--epochs", "2", "--warmup-epochs", "2"]), 2);
        assert_eq!(warmup(&["--epochs", "4", "--warmup-epochs", "0"]), 0);
    }

    #[test]
    fn the_official_recipe_sets_every_behaviour_and_each_flag_switches_one() {
        let c = config("dtd", &["--recipe", "official"]);
        assert_eq!(c.recipe, RecipeName::Official);
        assert_eq!((c.optim.epochs, c.optim.warmup_epochs), (25, 3));
        assert!(close(c.optim.lr, 0.032));
        assert!(close(
            config("dtd", &["--recipe", "official", "--batch-size", "8"])
                .optim
                .lr,
            0.032
        ));
        assert_eq!(c.mixture.layout, OfficialBehaviours::all().layout);
        assert!(c.optim.warmup_all_groups);
        assert_eq!(c.loss.gate_target, GateTarget::SoftmaxBoost);
        assert!(!c.loss.gate_target_detached && !c.loss.text_routed_only);
        // Below batch size 4 (ImageNet's 1) L_text sees only the routed experts.
        let small = config("dtd", &["--recipe", "official", "--batch-size", "2"]);
        assert!(small.loss.text_routed_only);
        assert!(
            config("imagenet", &["--recipe", "official"])
                .loss
                .text_routed_only
        );
        // Each behaviour is a flag of its own: all switched off again ...
        let off = config(
            "dtd",
            &[
                "--recipe",
                "official",
                "--batch-size",
                "2",
                "--context-count",
                "tokens",
                "--classify-without-period",
                "false",
                "--warmup-all-groups",
                "false",
                "--gate-target",
                "top-k",
                "--gate-target-grad",
                "false",
                "--text-routed-only",
                "false",
            ],
        );
        assert_eq!(off.mixture.layout, LayoutOptions::default());
        assert!(!off.optim.warmup_all_groups && !off.loss.text_routed_only);
        assert_eq!(off.loss.gate_target, GateTarget::TopKUniform);
        assert!(off.loss.gate_target_detached);
        // ... or one at a time under the default recipe, which stays the clean reading.
        let clean = config("dtd", &[]);
        assert_eq!(clean.recipe, RecipeName::Default);
        assert_eq!(clean.mixture.layout, LayoutOptions::default());
        assert!(!clean.optim.warmup_all_groups && !clean.loss.text_routed_only);
        let one = config("dtd", &["--context-count", "words", "--gate-target-grad"]);
        assert_eq!(one.mixture.layout.context_count, ContextCount::Words);
        assert!(!one.mixture.layout.classify_without_period);
        assert!(!one.loss.gate_target_detached);
        assert_eq!(one.loss.gate_target, GateTarget::TopKUniform);
    }

    #[test]
    fn the_official_recipe_computes_in_f16_on_gpus_unless_told_and_in_f32_on_the_cpu() {
        let parse = |args: &[&str]| {
            Flags::try_parse_from([&["train"], args].concat())
                .unwrap()
                .flags
        };
        let f32_checkpoint = CheckpointArgs {
            weights: "clip.safetensors".into(),
            load: LoadOptions::default(),
            precision: Precision::F32,
        };
        let precision = |flags: &TrainFlags, device: DeviceSpec| {
            flags
                .checkpoint_for(&f32_checkpoint, &device)
                .unwrap()
                .precision
        };
        let official = parse(&["--recipe", "official"]);
        assert_eq!(precision(&official, DeviceSpec::Cuda(0)), Precision::F16);
        assert_eq!(precision(&official, DeviceSpec::Cpu), Precision::F32);
        let mut told = parse(&["--recipe", "official"]);
        told.given = vec!["precision".into()];
        assert_eq!(precision(&told, DeviceSpec::Cuda(0)), Precision::F32);
        assert_eq!(precision(&parse(&[]), DeviceSpec::Cuda(0)), Precision::F32);
    }

    #[test]
    fn flags_override_the_recipe_and_keep_their_spellings() {
        let c = config(
            "dtd",
            &[
                "--method",
                "ZS",
                "--clip-norm",
                "0",
                "--momentum",
                "0.5",
                "--text-classes",
                "train",
                "--gate-prototypes",
                "class_agnostic",
                "--gate-target",
                "topk",
            ],
        );
        assert_eq!(c.method, Method::ZeroShot);
        assert_eq!((c.optim.clip_norm, c.optim.momentum), (None, 0.5));
        assert_eq!(c.loss.text_classes, TextClasses::Train);
        assert_eq!(c.loss.gate_prototypes, GatePrototypes::ClassAgnostic);
        assert_eq!(c.loss.gate_target, GateTarget::TopKUniform);
        let bad = Flags::try_parse_from(["train", "--lr-scaling", "square"]);
        assert!(bad.is_err());
    }
}
