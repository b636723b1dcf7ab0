//! `mocoop pretrain`: contrastively pretrains a small CLIP on the generated world and saves it in the
//! native format, then reports its zero-shot accuracy on the world's benchmark (base classes seen in
//! pretraining, new classes held out of it).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use mocoop_model::config::{ClipConfig, TextConfig, VisionConfig};
use mocoop_model::templates::TemplateTable;
use mocoop_pretrain::{
    PretrainConfig, PretrainEvent, ZeroShotAccuracy, pretrain, save_pretrained, zero_shot_base_new,
};
use mocoop_world::{BenchSplit, BenchmarkConfig, TEMPLATE_SECTION, WorldConfig};
use serde_json::json;

use crate::device::{DeviceSpec, OnBackend};

/// Pretrains a small CLIP on the generated shape world (contrastive, from scratch) and saves it.
#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// Where to write the checkpoint (native .safetensors, fp16).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Seed of the initial weights and of the training pairs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Optimizer steps (1400 made the shipped checkpoint).
    #[arg(long, default_value_t = 1400)]
    steps: usize,
    /// Image-caption pairs per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps (default: 5% of the steps, at most 200).
    #[arg(long)]
    warmup: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f32,
    // The model's sizes default to the `shapeworld` preset, the shipped checkpoint's.
    /// Image side, pixels.
    #[arg(long, default_value_t = ClipConfig::shapeworld().vision.image_size)]
    image_size: usize,
    /// ViT patch side, pixels.
    #[arg(long, default_value_t = ClipConfig::shapeworld().vision.patch_size)]
    patch_size: usize,
    /// Image encoder width.
    #[arg(long, default_value_t = ClipConfig::shapeworld().vision.width)]
    vision_width: usize,
    /// Image encoder blocks.
    #[arg(long, default_value_t = ClipConfig::shapeworld().vision.layers)]
    vision_layers: usize,
    /// Image encoder attention heads.
    #[arg(long, default_value_t = ClipConfig::shapeworld().vision.heads)]
    vision_heads: usize,
    /// Text encoder width (the token embedding, 49,408 rows, dominates the file size).
    #[arg(long, default_value_t = ClipConfig::shapeworld().text.width)]
    text_width: usize,
    /// Text encoder blocks.
    #[arg(long, default_value_t = ClipConfig::shapeworld().text.layers)]
    text_layers: usize,
    /// Text encoder attention heads.
    #[arg(long, default_value_t = ClipConfig::shapeworld().text.heads)]
    text_heads: usize,
    /// Width of the joint embedding space.
    #[arg(long, default_value_t = ClipConfig::shapeworld().embed_dim)]
    embed_dim: usize,
    /// Evaluate zero-shot accuracy (validation images) every N steps; 0: only at the end.
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    /// Seed of the benchmark images of the final evaluation.
    #[arg(long, default_value_t = 1)]
    bench_seed: u64,
    /// Write the loss curve and evaluations as JSON here.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Keep the (never trained) token-embedding rows of tokens absent from the captions instead of
    /// writing them as zeros.
    #[arg(long)]
    keep_unused_tokens: bool,
    /// Compute device: cpu, wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
}

impl PretrainArgs {
    /// The device the user asked for.
    pub fn device(&self) -> &DeviceSpec {
        &self.device
    }

    fn config(&self) -> PretrainConfig {
        let world = WorldConfig {
            image_size: self.image_size as u32,
            ..WorldConfig::default()
        };
        let preset = ClipConfig::shapeworld();
        let clip = ClipConfig {
            embed_dim: self.embed_dim,
            vision: VisionConfig {
                width: self.vision_width,
                layers: self.vision_layers,
                heads: self.vision_heads,
                patch_size: self.patch_size,
                image_size: self.image_size,
                resnet_stages: None,
            },
            text: TextConfig {
                width: self.text_width,
                layers: self.text_layers,
                heads: self.text_heads,
                ..preset.text
            },
            ..preset
        };
        let mut config = PretrainConfig::new(self.seed, self.steps);
        config.clip = clip;
        config.world = world;
        config.batch_size = self.batch_size;
        config.lr = self.lr;
        if let Some(warmup) = self.warmup {
            config.warmup_steps = warmup;
        }
        config.weight_decay = self.weight_decay;
        config.eval_every = self.eval_every;
        config
    }

    /// The command line that reproduces this run, recorded in the checkpoint.
    fn command_line(&self) -> String {
        format!(
            "mocoop pretrain --out {} --seed {} --steps {} --batch-size {} --lr {} --warmup {} \
             --weight-decay {} --image-size {} --patch-size {} --vision-width {} --vision-layers {} \
             --vision-heads {} --text-width {} --text-layers {} --text-heads {} --embed-dim {}",
            self.out.display(),
            self.seed,
            self.steps,
            self.batch_size,
            self.lr,
            self.config().warmup_steps,
            self.weight_decay,
            self.image_size,
            self.patch_size,
            self.vision_width,
            self.vision_layers,
            self.vision_heads,
            self.text_width,
            self.text_layers,
            self.text_heads,
            self.embed_dim
        )
    }
}

fn percent(x: f32) -> String {
    format!("{:.1}", 100.0 * x)
}

fn accuracy_json(a: &ZeroShotAccuracy) -> serde_json::Value {
    json!({
        "base": a.base,
        "new": a.new,
        "hm": a.hm,
        "per_style": a.per_style.iter().map(|(s, b, n)| json!({"style": s.name(), "base": b, "new": n})).collect::<Vec<_>>(),
    })
}

impl OnBackend for PretrainArgs {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let config = self.config();
        let command = self.command_line();
        eprintln!(
            "pretraining a CLIP (image {} px / patch {}, vision {}x{}, text {}x{}, embed {}) for {} \
             steps of {} pairs on {}",
            config.clip.vision.image_size,
            config.clip.vision.patch_size,
            config.clip.vision.width,
            config.clip.vision.layers,
            config.clip.text.width,
            config.clip.text.layers,
            config.clip.embed_dim,
            config.steps,
            config.batch_size,
            self.device
        );
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        // Without a terminal the bar is hidden: print a line every 5% instead.
        let hidden = bar.is_hidden();
        let every = (config.steps / 20).max(1);
        let mut smoothed: Option<f32> = None;
        let mut last_eval = String::new();
        let trained = pretrain::<B>(&config, &device, |event| match event {
            PretrainEvent::Step(log) => {
                let s = smoothed.map_or(log.loss, |s| 0.95 * s + 0.05 * log.loss);
                smoothed = Some(s);
                let message = format!(
                    "loss {s:.3} · scale {:.1} · lr {:.1e}{last_eval}",
                    log.temperature, log.lr
                );
                if hidden && (log.step % every == 0 || log.step == config.steps) {
                    eprintln!(
                        "step {}/{} ({:.0} s): {message}",
                        log.step, config.steps, log.elapsed
                    );
                }
                bar.set_position(log.step as u64);
                bar.set_message(message);
            }
            PretrainEvent::Eval(log) => {
                last_eval = format!(
                    " · zero-shot seen {}% held-out {}%",
                    percent(log.accuracy.base),
                    percent(log.accuracy.new)
                );
                let line = format!(
                    "step {}: zero-shot (val, 'a photo of a {{}}.') seen pairs {}%, held-out pairs {}%",
                    log.step,
                    percent(log.accuracy.base),
                    percent(log.accuracy.new)
                );
                if hidden {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        })?;
        bar.finish();
        let seconds = trained.seconds;
        let source = format!(
            "{command} (mocoop-world shape world; held-out colour-shape pairs never seen; trained in \
             {seconds:.0} s on {})",
            self.device
        );
        let used = (!self.keep_unused_tokens).then_some(&trained.used_tokens);
        let bytes = save_pretrained(&trained.clip, used, &source, &self.out)
            .with_context(|| format!("saving {}", self.out.display()))?;
        println!(
            "trained {} steps in {:.1} s ({:.2} steps/s); wrote {} ({:.1} MB)",
            config.steps,
            seconds,
            config.steps as f64 / seconds,
            self.out.display(),
            bytes as f64 / 1e6
        );

        // Zero-shot on the benchmark's test images: base = pairs seen in pretraining, new = held out.
        let eval_start = Instant::now();
        let mut bench = BenchmarkConfig::new(self.bench_seed);
        bench.image_size = config.world.image_size;
        let inner_device = device.clone();
        let groups = TemplateTable::builtin().groups(TEMPLATE_SECTION)?;
        let ensemble: Vec<String> = groups.all_templates().map(String::from).collect();
        let single = vec!["a photo of a {}.".to_string()];
        let mut results = Vec::new();
        for (name, templates) in [
            ("a photo of a {}.", &single),
            ("shapeworld ensemble", &ensemble),
        ] {
            let acc = zero_shot_base_new(
                &trained.clip,
                &bench,
                BenchSplit::Test,
                templates,
                &inner_device,
            );
            println!(
                "zero-shot test ({name}): base {}%, new {}%, HM {}%",
                percent(acc.base),
                percent(acc.new),
                percent(acc.hm)
            );
            for (style, b, n) in &acc.per_style {
                println!(
                    "    {:<9} base {:>5}%  new {:>5}%",
                    style.name(),
                    percent(*b),
                    percent(*n)
                );
            }
            results.push(json!({"prompts": name, "accuracy": accuracy_json(&acc)}));
        }
        eprintln!("evaluated in {:.1} s", eval_start.elapsed().as_secs_f64());
        if let Some(path) = &self.history {
            let history = json!({
                "command": command,
                "seconds": seconds,
                "steps": trained.steps.iter().map(|s| json!({"step": s.step, "loss": s.loss, "lr": s.lr, "scale": s.temperature, "elapsed": s.elapsed})).collect::<Vec<_>>(),
                "evals": trained.evals.iter().map(|e| json!({"step": e.step, "accuracy": accuracy_json(&e.accuracy)})).collect::<Vec<_>>(),
                "test": results,
                "bench_seed": self.bench_seed,
            });
            std::fs::write(path, serde_json::to_string_pretty(&history)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}
