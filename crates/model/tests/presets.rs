//! The named geometries of `ClipConfig`: the released sizes reproduce OpenAI's parameter counts,
//! the small presets build, and `shapeworld` is the checkpoint the project ships.

use burn::backend::Flex;
use burn::module::Module;
use mocoop_model::config::{ClipConfig, default_heads};
use mocoop_model::weights::{self, LoadOptions};
use mocoop_model::{Activation, Clip};

/// Parameters of a pre-norm residual block of width `w`: QKV and output projections with biases
/// (4w² + 4w), two LayerNorms (4w), the 4×-wide MLP with biases (8w² + 5w).
fn block(w: usize) -> usize {
    12 * w * w + 13 * w
}

/// Parameters of a CLIP of geometry `c`, counted from its fields the way OpenAI's `build_model`
/// lays the tensors out.
pub fn parameter_count(c: &ClipConfig) -> usize {
    let v = &c.vision;
    let tokens = v.grid_size() * v.grid_size() + 1;
    let vision = 3 * v.patch_size * v.patch_size * v.width // conv1, no bias
        + v.width // class embedding
        + tokens * v.width // position embedding
        + 2 * 2 * v.width // ln_pre, ln_post
        + v.layers * block(v.width)
        + v.width * c.embed_dim; // proj
    let t = &c.text;
    let text = (t.vocab_size + t.context_length) * t.width // token and position embeddings
        + t.layers * block(t.width)
        + 2 * t.width // ln_final
        + t.width * c.embed_dim; // text_projection
    vision + text + 1 // logit_scale
}

fn random_clip(config: &ClipConfig) -> Clip<Flex> {
    config.init(3, &Default::default()).unwrap()
}

#[test]
fn the_count_from_the_fields_is_what_a_built_model_holds() {
    for config in [ClipConfig::tiny(), ClipConfig::shapeworld()] {
        let clip = random_clip(&config);
        assert_eq!(clip.num_params(), parameter_count(&config), "{config:?}");
    }
}

#[test]
fn released_presets_have_openai_sizes() {
    // Millions of parameters of OpenAI's released models (their model card and `clip.available
    // _models()` checkpoints): 149.62M, 151.28M and 427.62M.
    let millions = |c: &ClipConfig| (parameter_count(c) as f64 / 1e4).round() / 100.0;
    assert_eq!(millions(&ClipConfig::vit_b_16()), 149.62);
    assert_eq!(millions(&ClipConfig::vit_b_32()), 151.28);
    assert_eq!(millions(&ClipConfig::vit_l_14()), 427.62);
    for config in [
        ClipConfig::vit_b_16(),
        ClipConfig::vit_b_32(),
        ClipConfig::vit_l_14(),
    ] {
        // OpenAI's 64-wide heads, so a bare state dict of these models loads with these heads.
        assert_eq!(
            Some(config.vision.heads),
            default_heads(config.vision.width)
        );
        assert_eq!(Some(config.text.heads), default_heads(config.text.width));
        assert_eq!(config.vision.image_size, 224);
        assert_eq!(
            (config.text.context_length, config.text.vocab_size),
            (77, 49408)
        );
        assert_eq!(config.activation, Activation::QuickGelu);
    }
    assert_eq!(ClipConfig::vit_b_32().vision.grid_size(), 7);
    assert_eq!(ClipConfig::vit_l_14().vision.grid_size(), 16);
}

#[test]
fn shapeworld_is_the_shipped_checkpoint() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/shapeworld-clip.safetensors");
    let loaded = weights::load(&shipped, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.config, ClipConfig::shapeworld());
}

#[test]
fn builders_vary_one_field() {
    let config = ClipConfig::shapeworld()
        .with_image_size(64)
        .with_activation(Activation::Gelu);
    assert_eq!(config.vision.image_size, 64);
    assert_eq!(config.activation, Activation::Gelu);
    let unchanged = ClipConfig {
        vision: mocoop_model::config::VisionConfig {
            image_size: 32,
            ..config.vision.clone()
        },
        activation: Activation::QuickGelu,
        ..config
    };
    assert_eq!(unchanged, ClipConfig::shapeworld());
}

#[test]
fn init_is_seeded_and_starts_as_clip_does() {
    let device = Default::default();
    let config = ClipConfig::tiny();
    let image = burn::tensor::Tensor::<Flex, 4>::ones([1, 3, 32, 32], &device);
    let features = |seed| {
        let clip: Clip<Flex> = config.init(seed, &device).unwrap();
        let f = clip.encode_image(image.clone()).into_data();
        (clip, f.to_vec::<f32>().unwrap())
    };
    let (clip, a) = features(5);
    assert_eq!(a, features(5).1, "the same seed builds the same model");
    assert_ne!(a, features(6).1, "another seed builds another model");
    assert!((clip.logit_scale() - 100f32.ln()).abs() < 1e-6);
    let ln = &clip.vision.transformer().expect("a ViT").blocks[0].ln_1;
    let gamma = ln.gamma.val().into_data().to_vec::<f32>().unwrap();
    assert!(gamma.iter().all(|&g| g == 1.0), "{gamma:?}");
}

/// OpenAI's RN50 at full size (random weights through the loading code of a checkpoint): its
/// 102,007,137 parameters and 53,248 BatchNorm running statistics (open_clip's `RN50`, counted in
/// PyTorch), which are parameters here; 1024-dimensional features from one 224 px image.
#[test]
fn a_full_size_rn50_runs_a_forward_pass() {
    let config = ClipConfig::rn50();
    let clip = random_clip(&config);
    assert_eq!(clip.num_params(), 102_007_137 + 53_248);
    assert!(
        clip.vision.transformer().is_none(),
        "a ResNet has no ViT blocks"
    );
    let images = burn::tensor::Tensor::<Flex, 4>::ones([1, 3, 224, 224], &Default::default());
    let features = clip.vision.forward(images);
    assert_eq!(features.dims(), [1, 1024]);
    let values = features.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|x| x.is_finite()) && values.iter().any(|&x| x != 0.0));
}
