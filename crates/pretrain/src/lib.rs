#![warn(missing_docs)]
//! Contrastive pretraining of a small CLIP on the generated world ([`mocoop_world`]), so that the
//! project ships a model with real zero-shot ability and no download.
//!
//! CLIP's recipe, scaled down: (image, caption) batches drawn on the fly from the world (never the
//! held-out colour-shape pairs), the symmetric InfoNCE loss over the batch's image-text cosine
//! matrix times a learned temperature, AdamW with linear warm-up and cosine decay, the temperature
//! clamped at 100 after every update. Runs on any autodiff backend. A crate of its own: prompt
//! learning (`mocoop-train`) neither needs it nor the world, and this loop needs none of it.
//!
//! [`zero_shot_base_new`] measures what the result can do: zero-shot accuracy on the benchmark's base
//! classes (pairs seen in pretraining) and new classes (pairs never seen together).

mod zero_shot;

pub use zero_shot::{ZeroShotAccuracy, harmonic_mean, zero_shot_base_new};

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use mocoop_model::Clip;
use mocoop_model::clip::l2_normalize;
use mocoop_model::config::ClipConfig;
use mocoop_model::preprocess::{batch_tensor, normalize_chw};
use mocoop_model::tokenizer::{CONTEXT_LENGTH, ClipTokenizer, EOT_TOKEN, SOT_TOKEN};
use mocoop_model::weights::native::{StoredPrecision, save};
use mocoop_model::weights::{StateDict, WeightsError};
use mocoop_world::{BenchSplit, BenchmarkConfig, World, WorldConfig};

/// The geometry of the shipped world model: a ViT of width 128 (4 blocks, 32 px images in 8 px
/// patches) and a text transformer of width 64 (4 blocks) over CLIP's full 49,408-token vocabulary,
/// joined in a 64-dimensional space. The token embedding dominates the size (about 6 MB in fp16).
pub fn small_clip(image_size: usize) -> ClipConfig {
    ClipConfig::shapeworld().with_image_size(image_size)
}

/// Everything that determines a pretraining run.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainConfig {
    /// The model to train from random initialisation.
    pub clip: ClipConfig,
    /// The world the pairs come from (its image size must be the model's).
    pub world: WorldConfig,
    /// Seed of the initial weights and of the pair stream.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Initial raw (log) temperature: CLIP starts at ln(1/0.07).
    pub init_logit_scale: f32,
    /// The raw temperature is clamped to `[0, max_logit_scale]` after every step (ln 100).
    pub max_logit_scale: f32,
    /// Evaluate zero-shot accuracy every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Validation images per class for those evaluations.
    pub eval_per_class: usize,
}

impl PretrainConfig {
    /// The recipe of the shipped checkpoint for `steps` steps, with the [`small_clip`] geometry.
    pub fn new(seed: u64, steps: usize) -> Self {
        let world = WorldConfig::default();
        Self {
            clip: small_clip(world.image_size as usize),
            world,
            seed,
            steps,
            batch_size: 128,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: (steps / 20).clamp(1, 200),
            weight_decay: 0.05,
            init_logit_scale: (1.0f32 / 0.07).ln(),
            max_logit_scale: 100f32.ln(),
            eval_every: 0,
            eval_per_class: 10,
        }
    }

    /// The learning rate of `step` (0-based): linear warm-up, then cosine decay to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    fn check(&self) -> Result<(), WeightsError> {
        let invalid = |m: String| Err(WeightsError::Config(m));
        if self.clip.vision.image_size != self.world.image_size as usize {
            return invalid(format!(
                "the model takes {} px images but the world draws {} px",
                self.clip.vision.image_size, self.world.image_size
            ));
        }
        if !self
            .clip
            .vision
            .image_size
            .is_multiple_of(self.clip.vision.patch_size)
        {
            return invalid("the image size must be a multiple of the patch size".into());
        }
        if self.batch_size < 2 || self.steps == 0 {
            return invalid("need at least 2 pairs per batch and 1 step".into());
        }
        Ok(())
    }
}

/// One optimizer step, as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLog {
    /// 1-based step number.
    pub step: usize,
    /// The symmetric InfoNCE loss of the step's batch (before the update).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// `exp(logit_scale)` after the update.
    pub temperature: f32,
    /// Seconds since training started.
    pub elapsed: f64,
}

/// A zero-shot evaluation during or after pretraining.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalLog {
    /// Steps done when it was measured.
    pub step: usize,
    /// The accuracies.
    pub accuracy: ZeroShotAccuracy,
}

/// What [`pretrain`] reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum PretrainEvent<'a> {
    /// A step finished.
    Step(&'a StepLog),
    /// An evaluation finished.
    Eval(&'a EvalLog),
}

/// A trained model and its history.
#[derive(Debug)]
pub struct Pretrained<B: Backend> {
    /// The model (without autodiff).
    pub clip: Clip<B>,
    /// Every step.
    pub steps: Vec<StepLog>,
    /// Every evaluation (the last one is after the final step).
    pub evals: Vec<EvalLog>,
    /// Every token id that occurred in a training caption (plus SOT/EOT): rows of the token
    /// embedding outside this set never received a gradient.
    pub used_tokens: BTreeSet<u32>,
    /// Wall-clock seconds of training, evaluations included.
    pub seconds: f64,
}

/// A freshly initialised model of `config` (seeded), with CLIP's initial temperature.
pub fn init_clip<B: Backend>(
    config: &PretrainConfig,
    device: &B::Device,
) -> Result<Clip<B>, WeightsError> {
    let clip = config.clip.init(config.seed, device)?;
    let init = config.init_logit_scale;
    Ok(clip.map_logit_scale(|t| t.zeros_like().add_scalar(init)))
}

/// One batch, prepared off the training thread.
struct Batch {
    pixels: Vec<Vec<f32>>,
    tokens: Vec<Vec<u32>>,
}

/// CLIP's symmetric InfoNCE: mean of the cross-entropies of matching each image to its caption
/// among the batch's captions and each caption to its image. `logits`: `[n, n]`, row = image.
pub fn clip_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = logits.dims()[0];
    let eye = Tensor::<B, 2>::eye(n, &logits.device());
    let matched = log_softmax(logits.clone(), 1) + log_softmax(logits, 0);
    (matched * eye).sum().div_scalar(-2.0 * n as f64)
}

/// The contrastive loss of a batch of pairs: preprocessed images (`3 * size * size` floats each)
/// and their tokenised captions.
pub fn pair_loss<B: Backend>(
    clip: &Clip<B>,
    pixels: &[Vec<f32>],
    tokens: &[Vec<u32>],
    device: &B::Device,
) -> Tensor<B, 1> {
    let size = clip.config().vision.image_size;
    let images = batch_tensor::<B>(pixels, size, device);
    let image_features = l2_normalize(clip.vision.forward(images));
    let text_features = clip.encode_text(tokens, device);
    let scale = clip.logit_scale_tensor().exp().reshape([1, 1]);
    clip_loss(image_features.matmul(text_features.transpose()) * scale)
}

/// The contrastive loss of pairs `start..start + count` of the world's stream of `seed`.
pub fn world_loss<B: Backend>(
    clip: &Clip<B>,
    world: &World,
    seed: u64,
    start: u64,
    count: usize,
    device: &B::Device,
) -> f32 {
    let tokenizer = ClipTokenizer::embedded();
    let context = clip.config().text.context_length.min(CONTEXT_LENGTH);
    let samples = world.pretraining_batch(seed, start, count);
    let pixels: Vec<Vec<f32>> = samples.iter().map(|s| normalize_chw(&s.image)).collect();
    let tokens: Vec<Vec<u32>> = samples
        .iter()
        .map(|s| tokenizer.tokenize(&s.caption, context))
        .collect();
    pair_loss(clip, &pixels, &tokens, device)
        .into_scalar()
        .elem()
}

/// Trains a CLIP of `config.clip` from scratch on the world's pairs. `on_event` sees every step and
/// evaluation (draw a progress bar there).
pub fn pretrain<B: AutodiffBackend>(
    config: &PretrainConfig,
    device: &B::Device,
    mut on_event: impl FnMut(PretrainEvent<'_>),
) -> Result<Pretrained<B::InnerBackend>, WeightsError> {
    config.check()?;
    let world = World::new(config.world.clone());
    let tokenizer = ClipTokenizer::embedded();
    let model = init_clip::<B>(config, device)?;
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.98)
        .with_epsilon(1e-6)
        .with_weight_decay(config.weight_decay)
        .init::<B, Clip<B>>();
    let eval_bench = eval_benchmark(config);
    let templates = vec!["a photo of a {}.".to_string()];
    let context = config.clip.text.context_length.min(CONTEXT_LENGTH);
    let mut used_tokens = BTreeSet::from([SOT_TOKEN, EOT_TOKEN]);
    let mut steps = Vec::with_capacity(config.steps);
    let mut evals = Vec::new();
    let start = Instant::now();

    let model = std::thread::scope(|scope| {
        let mut model = model;
        // Rendering and tokenising run one batch ahead of the optimizer.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(2);
        let world = &world;
        scope.spawn(move || {
            for step in 0..config.steps {
                let start = (step * config.batch_size) as u64;
                let samples = world.pretraining_batch(config.seed, start, config.batch_size);
                let batch = Batch {
                    pixels: samples.iter().map(|s| normalize_chw(&s.image)).collect(),
                    tokens: samples
                        .iter()
                        .map(|s| tokenizer.tokenize(&s.caption, context))
                        .collect(),
                };
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        for step in 0..config.steps {
            let batch = receiver.recv().expect("the batch producer stopped early");
            used_tokens.extend(batch.tokens.iter().flatten().copied());
            let lr = config.lr_at(step);
            let loss = pair_loss(&model, &batch.pixels, &batch.tokens, device);
            let loss_value: f32 = loss.clone().into_scalar().elem();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            let max = config.max_logit_scale;
            model = model.map_logit_scale(|t| t.clamp(0.0, max));
            let log = StepLog {
                step: step + 1,
                loss: loss_value,
                lr,
                temperature: model.logit_scale().exp(),
                elapsed: start.elapsed().as_secs_f64(),
            };
            on_event(PretrainEvent::Step(&log));
            steps.push(log);
            let last = step + 1 == config.steps;
            if last || (config.eval_every > 0 && (step + 1).is_multiple_of(config.eval_every)) {
                let accuracy = zero_shot_base_new(
                    &model.valid(),
                    &eval_bench,
                    BenchSplit::Val,
                    &templates,
                    device,
                );
                let log = EvalLog {
                    step: step + 1,
                    accuracy,
                };
                on_event(PretrainEvent::Eval(&log));
                evals.push(log);
            }
        }
        model
    });
    Ok(Pretrained {
        clip: model.valid(),
        steps,
        evals,
        used_tokens,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The benchmark classes with a separate seed, for evaluations during pretraining.
fn eval_benchmark(config: &PretrainConfig) -> BenchmarkConfig {
    let mut bench =
        BenchmarkConfig::new(config.seed ^ 0x5eed_e7a1).with_counts(0, config.eval_per_class, 0);
    bench.image_size = config.world.image_size;
    bench
}

/// Saves a trained model in the native format (fp16). With `used_tokens`, the token-embedding rows
/// of every other token (never trained, so never meaningful) are written as zeros, which makes
/// the file compress well. Returns the file size in bytes.
pub fn save_pretrained<B: Backend>(
    clip: &Clip<B>,
    used_tokens: Option<&BTreeSet<u32>>,
    source: &str,
    path: &Path,
) -> Result<u64, WeightsError> {
    let mut state = clip.to_state_dict();
    if let Some(used) = used_tokens {
        let name = "token_embedding.weight";
        let shape = state
            .shape(name)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| WeightsError::Config(format!("no '{name}' to prune")))?;
        let data = state.take(name, &shape)?;
        let mut values = data
            .to_vec::<f32>()
            .map_err(|e| WeightsError::Config(format!("cannot read '{name}': {e:?}")))?;
        let width = shape[1];
        for (row, chunk) in values.chunks_mut(width).enumerate() {
            if !used.contains(&(row as u32)) {
                chunk.fill(0.0);
            }
        }
        let mut tensors = std::collections::BTreeMap::new();
        for key in state.names().map(String::from).collect::<Vec<_>>() {
            let key_shape = state.shape(&key).map(<[usize]>::to_vec).unwrap_or_default();
            tensors.insert(key.clone(), state.take(&key, &key_shape)?);
        }
        tensors.insert(
            name.to_string(),
            burn::tensor::TensorData::new(values, shape),
        );
        state = StateDict::new(tensors);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| WeightsError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    save(&state, clip.config(), source, StoredPrecision::F16, path)?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })
}
