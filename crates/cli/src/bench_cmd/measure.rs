//! Timing one case on one backend: the training step through the method interface the trainer
//! steps (`PromptLearner`: burn-train's `TrainStep::step` + `optimize`, with burn's SGD), and
//! inference through the classifier that `classify --prompts` and `eval` use
//! (`TrainedLearner::classifier`).

use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{TrainOutput, TrainStep};

use mocoop_data::{BatchPart, ImageBatch};
use mocoop_model::Precision;
use mocoop_model::clip::on_threads;
use mocoop_model::prompt::{ExpertInit, MixtureConfig, MixtureOfPrompts};
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_train::config::{DataConfig, DeepPromptConfig, Method, Setting, TrainConfig};
use mocoop_train::loss_scale::LossScale;
use mocoop_train::methods::cocoop::CocoopModel;
use mocoop_train::methods::deep::DeepModel;
use mocoop_train::methods::mixture::{MixtureRun, TEXT_CHUNK};
use mocoop_train::recipe::Recipe;
use mocoop_train::{
    ClassSetup, DeviceSplit, LearnerSetup, MocoopModel, PromptLearner, StepOutput, TrainedLearner,
};

use super::cases::{CaseName, CaseSpec, class_names, expert_groups, synthetic_batch};
use super::geometry::Geometry;
use super::report::peak_rss_mib;

/// Experts mixed per image (the paper's K).
const TOP_K: usize = 2;

/// The dataset whose recipes (and hand-made prompt) the training cases use.
const RECIPE_DATASET: &str = "caltech101";

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Untimed steps first (allocation, autotune, caches).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Also time the sub-parts of a training step.
    pub breakdown: bool,
    /// Seed of the weights and inputs.
    pub seed: u64,
    /// Precision of the encoders.
    pub precision: Precision,
    /// How several devices share a training step, as `train --split` does.
    pub split: DeviceSplit,
}

/// What a case measured.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Mean wall time of one step (or one inference batch), milliseconds.
    pub ms_per_step: f64,
    /// Sub-parts, milliseconds each (with `--breakdown`).
    pub parts: Vec<(String, f64)>,
    /// Peak resident memory in MiB after the timed steps, before any breakdown runs.
    pub peak_rss_mib: Option<f64>,
}

/// Waits for the device, so that a timer stops after the work and not after its submission.
fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow!("device synchronisation failed: {e:?}"))
}

/// Runs `warmup` untimed then `steps` timed iterations of `step`, threading `state` through, and
/// returns the mean milliseconds per timed iteration.
fn timed<T>(
    schedule: &Schedule,
    mut state: T,
    mut step: impl FnMut(T) -> Result<T>,
) -> Result<(f64, T)> {
    for _ in 0..schedule.warmup {
        state = step(state)?;
    }
    let start = Instant::now();
    for _ in 0..schedule.steps {
        state = step(state)?;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / schedule.steps.max(1) as f64;
    Ok((ms, state))
}

/// Times `spec` on backend `B`: training on `devices` (the first is the main device), inference
/// on the first.
pub fn measure<B: AutodiffBackend>(
    spec: &CaseSpec,
    geometry: Geometry,
    schedule: &Schedule,
    devices: &[B::Device],
) -> Result<Timing> {
    let device = &devices[0];
    B::seed(device, schedule.seed);
    if !spec.case.is_training() {
        return inference::<B::InnerBackend>(spec, geometry, schedule, device);
    }
    match spec.case.method() {
        Method::Mocoop => training::<B>(spec, geometry, schedule, devices),
        Method::Cocoop => method_training::<B, CocoopModel<B>>(spec, geometry, schedule, devices),
        Method::Maple => method_training::<B, DeepModel<B>>(spec, geometry, schedule, devices),
        _ => method_training::<B, MocoopModel<B>>(spec, geometry, schedule, devices),
    }
}

/// The gradients of one training step. On several devices this is what burn-train's multi-device
/// strategy does for `train --device a,b`: each device forks the model and runs its part of the
/// batch (its loss weighted by its share) on a thread of its own, and the gradients are summed on
/// the main device.
fn step_gradients<B: AutodiffBackend, M: PromptLearner<B>>(
    model: &M,
    batch: &ImageBatch<B>,
    devices: &[B::Device],
) -> Result<GradientsParams> {
    if let [_] = devices {
        return finite_grads(TrainStep::step(model, batch.clone()));
    }
    let size = batch.indices.len();
    let workers: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(index, device)| {
            let range = BatchPart {
                index,
                count: devices.len(),
            }
            .range(size);
            let part = ImageBatch {
                images: batch
                    .images
                    .clone()
                    .narrow(0, range.start, range.len())
                    .to_device(device),
                labels: batch
                    .labels
                    .clone()
                    .narrow(0, range.start, range.len())
                    .to_device(device),
                share: range.len() as f32 / size as f32,
                indices: batch.indices[range].to_vec(),
            };
            (model.clone().fork(device), part)
        })
        .collect();
    let parts = on_threads(workers, |(worker, part)| TrainStep::step(&worker, part));
    let mut sum = GradientsAccumulator::new();
    for output in parts {
        let grads = finite_grads(output)?;
        sum.accumulate(model, grads.to_device(&devices[0], model));
    }
    Ok(sum.grads())
}

/// A step's gradients; an error when its loss is not finite.
fn finite_grads(output: TrainOutput<StepOutput>) -> Result<GradientsParams> {
    if !output.item.loss_is_finite() {
        bail!("the loss is not finite");
    }
    Ok(output.grads)
}

fn training<B: AutodiffBackend>(
    spec: &CaseSpec,
    geometry: Geometry,
    schedule: &Schedule,
    devices: &[B::Device],
) -> Result<Timing> {
    let device = &devices[0];
    let tokenizer = ClipTokenizer::embedded();
    let groups = expert_groups(spec.experts)?;
    let clip = geometry
        .random_clip::<B>(schedule.seed, device)?
        .with_precision(schedule.precision);
    let size = clip.config().vision.image_size;
    let mixture = MixtureConfig::mocoop(&groups, TOP_K.min(spec.experts), schedule.seed);
    // MoCoOp's recipe on a dataset of the benchmark (Caltech101's groups for E = 5), at this
    // case's batch size.
    let recipe = Recipe::for_run(Method::Mocoop, RECIPE_DATASET);
    let mut model = MocoopModel::new(
        clip,
        tokenizer,
        mixture,
        groups.groups(),
        &ClassSetup::all(class_names(spec.classes)),
        recipe.loss.clone(),
        spec.ln_tuning,
        0.0,
        device,
    )?;
    if schedule.precision.needs_loss_scaling() {
        model.state.loss_scale = Some(LossScale::default());
    }
    let step_devices = match schedule.split {
        DeviceSplit::Batch => devices,
        DeviceSplit::Classes => {
            model.split_text(devices);
            &devices[..1]
        }
    };
    let optim_config = recipe.optim(spec.batch, recipe.epochs);
    let mut optim = optim_config.sgd().init::<B, MocoopModel<B>>();
    let (images, labels) = synthetic_batch::<B>(spec.batch, size, spec.classes, device);
    let batch = ImageBatch {
        images: images.clone(),
        labels: labels.clone(),
        indices: (0..spec.batch).collect(),
        share: 1.0,
    };
    let (ms_per_step, model) = timed(schedule, model, |model| {
        let grads = step_gradients(&model, &batch, step_devices)?;
        let model = TrainStep::optimize(model, &mut optim, optim_config.lr, grads);
        sync::<B>(device)?;
        Ok(model)
    })?;
    let peak_rss_mib = peak_rss_mib();
    let mut parts = Vec::new();
    if schedule.breakdown {
        let part = Schedule {
            warmup: 1,
            ..*schedule
        };
        let mut time = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let (ms, ()) = timed(&part, (), |()| {
                f()?;
                sync::<B>(device)
            })?;
            parts.push((name.to_string(), ms));
            Ok(())
        };
        // The image side as a step runs it: in parts on the CPU with LN tuning, without a graph
        // when the encoder is frozen.
        time("image encoder forward", &mut || {
            drop(model.step_features(images.clone()));
            Ok(())
        })?;
        if spec.ln_tuning {
            time("image encoder forward+backward", &mut || {
                let (features, parts) = model.step_features(images.clone());
                let grads = features.sum().backward();
                if let Some(parts) = parts {
                    drop(parts.backward(grads, &model));
                }
                Ok(())
            })?;
        }
        time("text side forward (E x C prompts)", &mut || {
            drop(
                model
                    .mixture
                    .text_features(&model.clip.text, &model.prompts),
            );
            Ok(())
        })?;
        time("text side forward+backward", &mut || {
            let z = model
                .mixture
                .text_features(&model.clip.text, &model.prompts);
            drop(z.sum().backward());
            Ok(())
        })?;
        time("full forward (all losses)", &mut || {
            let terms = model.forward(images.clone(), labels.clone(), None, true);
            drop(terms.loss.into_data());
            Ok(())
        })?;
        time("full forward+backward", &mut || {
            drop(model.train_step(batch.clone()));
            Ok(())
        })?;
    }
    Ok(Timing {
        ms_per_step,
        parts,
        peak_rss_mib,
    })
}

/// The configuration of a run of `spec`'s (one-prompt) method: its recipe on the benchmark's
/// dataset at the case's batch size, the prompt starting from "a photo of a {}."; MaPLe's deep
/// prompts as its official configuration has them, no deeper than the blocks of `geometry`'s
/// towers after the first.
fn method_config(spec: &CaseSpec, geometry: Geometry, schedule: &Schedule) -> TrainConfig {
    let method = spec.case.method();
    let recipe = Recipe::for_run(method, RECIPE_DATASET);
    let template = "a photo of a {}.".to_string();
    TrainConfig {
        method,
        recipe: Default::default(),
        weights: Default::default(),
        load: Default::default(),
        precision: schedule.precision,
        data: DataConfig {
            dataset: RECIPE_DATASET.into(),
            root: Default::default(),
            setting: Setting::Fewshot,
            shots: 0,
            seed: schedule.seed,
            batch_size: spec.batch,
            workers: 0,
            groups_file: None,
            skip_bad_images: false,
            official_templates: false,
        },
        mixture: MixtureConfig::coop(ExpertInit::Template { template }, schedule.seed),
        optim: recipe.optim(spec.batch, recipe.epochs),
        loss: recipe.loss,
        ln_tuning: false,
        router_noise: 0.0,
        validate: false,
        zero_shot: Default::default(),
        cached_views: 0,
        deep: DeepPromptConfig::official(method).map(|deep| {
            let config = geometry.config();
            let blocks = config.vision.layers.min(config.text.layers);
            let depth = deep.vision_depth.min(blocks);
            deep.with(Some(depth), None)
        }),
    }
}

/// Times a step of a one-prompt method (CoCoOp, KgCoOp, ProGrad, MaPLe) as the trainer builds and steps
/// it: `PromptLearner::build` from its run configuration, burn-train's step and update. No
/// breakdown: its parts are the MoCoOp cases'.
fn method_training<B: AutodiffBackend, M: PromptLearner<B>>(
    spec: &CaseSpec,
    geometry: Geometry,
    schedule: &Schedule,
    devices: &[B::Device],
) -> Result<Timing> {
    let device = &devices[0];
    let config = method_config(spec, geometry, schedule);
    let clip = geometry
        .random_clip::<B>(schedule.seed, device)?
        .with_precision(schedule.precision);
    let size = clip.config().vision.image_size;
    let groups = expert_groups(5)?;
    let model = M::build(LearnerSetup {
        config: &config,
        clip,
        tokenizer: ClipTokenizer::embedded(),
        groups: &groups,
        classes: ClassSetup::all(class_names(spec.classes)),
        encode_all_experts: false,
        device,
    })?;
    let mut optim = config.optim.sgd().init::<B, M>();
    let (images, labels) = synthetic_batch::<B>(spec.batch, size, spec.classes, device);
    let batch = ImageBatch {
        images,
        labels,
        indices: (0..spec.batch).collect(),
        share: 1.0,
    };
    let (ms_per_step, _) = timed(schedule, model, |model| {
        let grads = step_gradients(&model, &batch, devices)?;
        let model = TrainStep::optimize(model, &mut optim, config.optim.lr, grads);
        sync::<B>(device)?;
        Ok(model)
    })?;
    Ok(Timing {
        ms_per_step,
        parts: Vec::new(),
        peak_rss_mib: peak_rss_mib(),
    })
}

fn inference<B: Backend>(
    spec: &CaseSpec,
    geometry: Geometry,
    schedule: &Schedule,
    device: &B::Device,
) -> Result<Timing> {
    let clip = geometry
        .random_clip::<B>(schedule.seed, device)?
        .with_precision(schedule.precision);
    let size = clip.config().vision.image_size;
    let (images, _) = synthetic_batch::<B>(spec.batch, size, spec.classes, device);
    let encode = |()| {
        drop(clip.encode_image(images.clone()).into_data());
        Ok(())
    };
    if spec.case == CaseName::EncodeImage {
        let (ms_per_step, ()) = timed(schedule, (), encode)?;
        return Ok(Timing {
            ms_per_step,
            parts: Vec::new(),
            peak_rss_mib: peak_rss_mib(),
        });
    }
    let tokenizer = ClipTokenizer::embedded();
    let groups = expert_groups(spec.experts)?;
    let config = MixtureConfig::mocoop(&groups, TOP_K.min(spec.experts), schedule.seed);
    let mixture = MixtureOfPrompts::new(config, &clip, tokenizer, device)?;
    let names = class_names(spec.classes);
    let run = MixtureRun {
        clip: clip.clone(),
        mixture,
        ln_tuning: false,
        official_source: None,
    };
    let classifier = run.classifier(tokenizer, &names, "bench", device)?;
    let (ms_per_step, ()) = timed(schedule, (), |()| {
        drop(classifier.predict(images.clone()).logits.into_data());
        Ok(())
    })?;
    let peak = peak_rss_mib();
    let mut parts = Vec::new();
    if schedule.breakdown {
        let f = clip.encode_image(images.clone());
        let prompts = run
            .mixture
            .class_prompts(&clip.text, tokenizer, &names, device)?;
        let text = run
            .mixture
            .classifier(&clip.text, &prompts, clip.logit_scale(), TEXT_CHUNK);
        let (mix, ()) = timed(schedule, (), |()| {
            drop(text.logits(f.clone()).into_data());
            Ok(())
        })?;
        parts.push(("router + mixture on cached text features".to_string(), mix));
        let (alone, ()) = timed(schedule, (), encode)?;
        parts.push(("image encoding alone, same process".to_string(), alone));
    }
    Ok(Timing {
        ms_per_step,
        parts,
        peak_rss_mib: peak,
    })
}
