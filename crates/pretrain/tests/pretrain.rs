//! Pretraining on the generated world: the loss goes down, checkpoints load back, evaluation runs.

use burn::backend::{Autodiff, Flex};
use mocoop_model::Clip;
use mocoop_model::config::{TextConfig, VisionConfig};
use mocoop_model::weights::LoadOptions;
use mocoop_pretrain::{
    PretrainConfig, PretrainEvent, harmonic_mean, init_clip, pretrain, save_pretrained, world_loss,
    zero_shot_base_new,
};
use mocoop_world::{BenchSplit, BenchmarkConfig, World, WorldConfig};

type A = Autodiff<Flex>;

fn tiny(steps: usize) -> PretrainConfig {
    let mut config = PretrainConfig::new(5, steps);
    config.world = WorldConfig {
        image_size: 16,
        ..WorldConfig::default()
    };
    config.clip.embed_dim = 32;
    config.clip.vision = VisionConfig {
        width: 32,
        layers: 1,
        heads: 2,
        patch_size: 8,
        image_size: 16,
        resnet_stages: None,
    };
    config.clip.text = TextConfig {
        width: 16,
        layers: 1,
        heads: 1,
        ..config.clip.text
    };
    config.batch_size = 24;
    config.lr = 5e-3;
    config.warmup_steps = 2;
    config.eval_per_class = 1;
    config
}

#[test]
fn a_few_steps_lower_the_loss_and_the_checkpoint_loads_back() {
    let device = Default::default();
    let config = tiny(25);
    let world = World::new(config.world.clone());
    // A fixed batch the model never trains on (the training stream starts at 0).
    let probe = |clip: &Clip<Flex>| world_loss(clip, &world, 99, 0, 48, &device);
    let before = probe(&init_clip::<Flex>(&config, &device).unwrap());
    let mut step_events = 0;
    let mut eval_events = 0;
    let trained = pretrain::<A>(&config, &device, |event| match event {
        PretrainEvent::Step(_) => step_events += 1,
        PretrainEvent::Eval(_) => eval_events += 1,
    })
    .unwrap();
    assert_eq!((step_events, eval_events), (25, 1));
    assert_eq!(trained.steps.len(), 25);
    let after = probe(&trained.clip);
    assert!(
        after < before - 0.15,
        "held-out batch loss should drop: {before} -> {after}"
    );
    let first: f32 = trained.steps[..5].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    let last: f32 = trained.steps[20..].iter().map(|s| s.loss).sum::<f32>() / 5.0;
    assert!(last < first, "training loss {first} -> {last}");
    assert!(trained.steps.iter().all(|s| s.temperature <= 100.0 + 1e-3));
    assert!(trained.used_tokens.len() > 50);

    // Saved with the untrained token rows zeroed, it loads and behaves the same on real captions.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let bytes = save_pretrained(&trained.clip, Some(&trained.used_tokens), "test", &path).unwrap();
    assert!(bytes > 49408 * 16 * 2);
    let loaded = Clip::<Flex>::load(&path, &LoadOptions::default(), &device).unwrap();
    assert_eq!(loaded.config(), trained.clip.config());
    assert!((probe(&loaded) - after).abs() < 0.02, "fp16 copy drifts");
    let state = loaded.to_state_dict();
    let embedding = state
        .get("token_embedding.weight")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let zero_rows = embedding
        .chunks(16)
        .filter(|row| row.iter().all(|&v| v == 0.0))
        .count();
    assert_eq!(zero_rows, 49408 - trained.used_tokens.len());
}

#[test]
fn zero_shot_evaluation_covers_both_halves_and_every_style() {
    let device = Default::default();
    let config = tiny(1);
    let clip = init_clip::<Flex>(&config, &device).unwrap();
    let mut bench = BenchmarkConfig::new(0).with_counts(0, 0, 5);
    bench.image_size = 16;
    let acc = zero_shot_base_new(
        &clip,
        &bench,
        BenchSplit::Test,
        &["a photo of a {}.".to_string()],
        &device,
    );
    assert!((0.0..=1.0).contains(&acc.base) && (0.0..=1.0).contains(&acc.new));
    assert_eq!(acc.per_style.len(), 5);
    // Each half's accuracy counts its classes' 5 images each.
    let classes = bench.classnames().len();
    let num_base = bench.base.len();
    for (accuracy, images) in [
        (acc.base, num_base * 5),
        (acc.new, (classes - num_base) * 5),
    ] {
        let correct = accuracy * images as f32;
        assert!(
            (correct - correct.round()).abs() < 1e-3,
            "{accuracy} of {images}"
        );
    }
    // A harmonic mean lies between the smaller value and the arithmetic mean.
    let (low, mean) = (acc.base.min(acc.new), (acc.base + acc.new) / 2.0);
    assert!(acc.hm >= low - 1e-6 && acc.hm <= mean + 1e-6, "{acc:?}");
}

#[test]
fn harmonic_mean_of_hand_computed_cases() {
    assert!((harmonic_mean(0.5, 1.0) - 2.0 / 3.0).abs() < 1e-6);
    assert!((harmonic_mean(0.25, 0.75) - 0.375).abs() < 1e-6);
    assert!((harmonic_mean(0.4, 0.4) - 0.4).abs() < 1e-6);
    assert_eq!(harmonic_mean(0.0, 0.9), 0.0);
    assert_eq!(harmonic_mean(0.0, 0.0), 0.0);
}

#[test]
fn learning_rate_warms_up_then_decays() {
    let config = PretrainConfig::new(0, 1000);
    assert_eq!(config.warmup_steps, 50);
    assert!(config.lr_at(0) < config.lr_at(49));
    assert!((config.lr_at(49) - config.lr).abs() < 1e-12);
    assert!(config.lr_at(500) < config.lr && config.lr_at(500) > config.min_lr);
    assert!((config.lr_at(999) - config.min_lr).abs() < 1e-6);
}
