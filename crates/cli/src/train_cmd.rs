//! `mocoop train`: trains MoCoOp or CoOp (or evaluates zero-shot CLIP) on a dataset into a run
//! directory, then evaluates it on the test split(s).
//!
//! Defaults follow the method description: 50 epochs with 5 warm-up epochs at batch size 32 and lr
//! 0.032 (scaled linearly with the batch size); for ImageNet 10 epochs, 1 warm-up epoch, batch size
//! 1 and lr 0.002. Every explicit flag overrides these.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::{Activation, Precision};
use mocoop_train::config::{
    DataConfig, GatePrototypes, GateTarget, LossConfig, Method, OptimConfig, Setting, TextClasses,
    TrainConfig, ZeroShotPrompts,
};
use mocoop_train::eval::template_groups;
use mocoop_train::run;
use mocoop_train::{DeviceSplit, TrainOptions, TrainReport, resume, train};

use crate::device::{DeviceList, OnDevices};
use crate::model_args::CheckpointArgs;

/// How the single CoOp prompt is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CtxInit {
    /// The words of `--ctx-template` around `{}` (CoOp's "a photo of a").
    Template,
    /// `--n-ctx` random vectors.
    Random,
}

/// Trains prompts on a dataset (MoCoOp, CoOp) or evaluates zero-shot CLIP, into a run directory.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// CLIP checkpoint, in any format `mocoop classify --weights` reads (not with --resume: the
    /// run's config.json names it).
    #[arg(long, value_name = "PATH", required_unless_present = "resume")]
    weights: Option<PathBuf>,
    /// MLP activation, for state dicts that do not record it.
    #[arg(long, ignore_case = true)]
    activation: Option<Activation>,
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

    #[command(flatten)]
    flags: TrainFlags,

    /// The arguments given on the command line (filled in by `main`; checked against --resume).
    #[arg(skip)]
    pub given: Vec<String>,
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

/// The method and every hyper-parameter of a run (shared by `train` and `protocol`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainFlags {
    /// The method to train.
    #[arg(long, default_value = "mocoop", ignore_case = true)]
    pub method: Method,
    /// Template groups file (TOML, same format as assets/template-groups.toml) for a custom dataset.
    #[arg(long, value_name = "FILE")]
    pub groups: Option<PathBuf>,

    // ---- prompts and router
    /// Experts mixed per image (K).
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Learn the shared text bias w (default: on for mocoop, off for coop).
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
    /// CoOp template whose words initialise the context.
    #[arg(long, default_value = "a photo of a {}.")]
    ctx_template: String,
    /// Number of random CoOp context vectors.
    #[arg(long, default_value_t = 4)]
    n_ctx: usize,
    /// Std of random context vectors.
    #[arg(long, default_value_t = 0.02)]
    ctx_std: f32,
    /// Zero-shot CLIP with one template instead of the ensemble of the dataset's templates.
    #[arg(long, value_name = "TEMPLATE")]
    zero_shot_template: Option<String>,

    // ---- losses
    /// Weight of the grouped text-level loss (default: 5 for mocoop, 0 for coop).
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
    /// Temperature of the text-level loss (decision; the published code uses 1).
    #[arg(long, default_value_t = 1.0)]
    text_tau: f32,
    /// Classes contrasted by the text-level loss (decision): all class names, or the training ones.
    #[arg(long, default_value = "all")]
    text_classes: TextClasses,
    /// Prototypes of the gating target (decision): per-class or class-agnostic.
    #[arg(long, default_value = "per-class")]
    gate_prototypes: GatePrototypes,
    /// Form of the gating target (decision): top-k (uniform) or softmax (published code's form).
    #[arg(long, default_value = "top-k")]
    gate_target: GateTarget,
    /// Let gradients flow through the gating target (decision; default: detached).
    #[arg(long)]
    gate_target_grad: bool,

    // ---- optimisation
    /// Training epochs (default 50; ImageNet 10).
    #[arg(long)]
    epochs: Option<usize>,
    /// Epochs at the constant warm-up rate (default 5; ImageNet 1).
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// The constant warm-up learning rate.
    #[arg(long, default_value_t = 1e-5)]
    warmup_lr: f64,
    /// Images per step (default 32; ImageNet 1).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate, used as given (default: --base-lr scaled by --lr-scaling).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning rate at batch size 32 (ImageNet default: 0.002, not scaled).
    #[arg(long)]
    base_lr: Option<f64>,
    /// Scale --base-lr linearly with the batch size (linear) or not (none).
    #[arg(long, default_value = "linear", value_name = "linear|none")]
    lr_scaling: String,
    /// SGD momentum (no dampening).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Global gradient-norm clipping threshold (0: off).
    #[arg(long, default_value_t = 1.0)]
    clip_norm: f32,
    /// Tune the image encoder's ln_1/ln_2 LayerNorms (default: on for mocoop, off for coop).
    #[arg(long, value_name = "BOOL")]
    ln_tuning: Option<bool>,
    /// Learning-rate multiplier of the image LayerNorms.
    #[arg(long, default_value_t = 0.1)]
    ln_lr_scale: f64,
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
    #[arg(long, default_value = "batch", value_name = "batch|classes", value_parser = parse_split)]
    split: DeviceSplit,
}

pub(crate) fn parse_split(s: &str) -> Result<DeviceSplit, String> {
    match s {
        "batch" => Ok(DeviceSplit::Batch),
        "classes" => Ok(DeviceSplit::Classes),
        other => Err(format!("'{other}': expected batch or classes")),
    }
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
        }
    }

    /// The run configuration these flags describe for one dataset and seed.
    pub fn config(&self, checkpoint: &CheckpointArgs, run: &RunData) -> Result<TrainConfig> {
        let imagenet = run.dataset == "imagenet";
        let batch_size = self.batch_size.unwrap_or(if imagenet { 1 } else { 32 });
        let lr = match (self.lr, imagenet) {
            (Some(lr), _) => lr,
            (None, true) => self.base_lr.unwrap_or(0.002),
            (None, false) => {
                let base = self.base_lr.unwrap_or(0.032);
                match self.lr_scaling.as_str() {
                    "linear" => base * batch_size as f64 / 32.0,
                    "none" => base,
                    other => anyhow::bail!("--lr-scaling '{other}': expected linear or none"),
                }
            }
        };
        let mocoop = self.method == Method::Mocoop;
        let data = DataConfig {
            dataset: run.dataset.clone(),
            root: run.root.clone(),
            setting: run.setting,
            shots: run.shots,
            seed: run.seed,
            batch_size,
            workers: self.workers,
            groups_file: self.groups.clone(),
            skip_bad_images: self.skip_bad_images,
        };
        let mut mixture = match self.method {
            Method::Mocoop | Method::ZeroShot => {
                let groups = template_groups(self.groups.as_deref(), &run.dataset)?;
                MixtureConfig::mocoop(&groups, self.top_k, run.seed)
            }
            Method::Coop => {
                let init = match self.ctx_init {
                    CtxInit::Template => ExpertInit::Template {
                        template: self.ctx_template.clone(),
                    },
                    CtxInit::Random => ExpertInit::Random {
                        n_ctx: self.n_ctx,
                        std: self.ctx_std,
                    },
                };
                MixtureConfig::coop(init, run.seed)
            }
        };
        mixture.renormalize = self.renormalize;
        if let Some(bias) = self.text_bias {
            mixture.text_bias = bias;
        }
        let defaults = if mocoop {
            LossConfig::mocoop()
        } else {
            LossConfig::coop()
        };
        let loss = LossConfig {
            lambda_text: self.lambda_text.unwrap_or(defaults.lambda_text),
            lambda_gate: self.lambda_gate.unwrap_or(defaults.lambda_gate),
            lambda_lb: self.lambda_lb,
            lambda_kd: self.lambda_kd,
            text_tau: self.text_tau,
            text_classes: self.text_classes,
            gate_prototypes: self.gate_prototypes,
            gate_target: self.gate_target,
            gate_target_detached: !self.gate_target_grad,
        };
        let optim = OptimConfig {
            lr,
            ln_lr_scale: self.ln_lr_scale,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            clip_norm: (self.clip_norm > 0.0).then_some(self.clip_norm),
            epochs: self.epochs.unwrap_or(if imagenet { 10 } else { 50 }),
            warmup_epochs: self.warmup_epochs.unwrap_or(if imagenet { 1 } else { 5 }),
            warmup_lr: self.warmup_lr,
        };
        let config = TrainConfig {
            method: self.method,
            weights: checkpoint.weights.clone(),
            activation: checkpoint.activation,
            precision: checkpoint.precision,
            data,
            mixture,
            loss,
            optim,
            ln_tuning: self.ln_tuning.unwrap_or(mocoop),
            router_noise: self.router_noise,
            validate: self.validate,
            zero_shot: match &self.zero_shot_template {
                Some(template) => ZeroShotPrompts::Template {
                    template: template.clone(),
                },
                None => ZeroShotPrompts::Ensemble,
            },
            cached_views: self.cached_views,
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
        let checkpoint = CheckpointArgs {
            weights: config.weights.clone(),
            activation: config.activation,
            precision: config.precision,
        };
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
            activation: self.activation,
            precision: self.precision,
        };
        let run = RunData {
            dataset: dataset.clone(),
            root: root.clone(),
            setting: self.setting,
            shots: self.shots,
            seed: self.seed,
        };
        let config = self.flags.config(&checkpoint, &run)?;
        let loaded = checkpoint.load::<B>(self.device.main(), &devices[0])?;
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
