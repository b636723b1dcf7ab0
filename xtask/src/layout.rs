//! The tensors of a CLIP ViT in OpenAI layout, by name and shape.
//!
//! This is the key layout of OpenAI's released checkpoints (and of open_clip's), which
//! `mocoop_model::weights` turns every format into; `convert` uses it to write exactly the model's
//! tensors, `bench` to materialise a random model of a given geometry.

use mocoop_model::ClipConfig;

/// Every tensor a CLIP ViT of this geometry has, in OpenAI layout (`logit_scale` as a 0-d tensor),
/// with OpenAI's MLPs of four times the width.
pub fn openai_tensors(config: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    openai_tensors_with_mlp(config, [4 * config.vision.width, 4 * config.text.width])
}

/// [`openai_tensors`] with other MLP widths (image, text), as open_clip's `mlp_ratio` makes them
/// (ViT-g-14, ViT-bigG-14).
pub fn openai_tensors_with_mlp(config: &ClipConfig, mlp: [usize; 2]) -> Vec<(String, Vec<usize>)> {
    let v = &config.vision;
    let t = &config.text;
    let grid = v.image_size / v.patch_size;
    let mut out: Vec<(String, Vec<usize>)> = vec![
        ("visual.class_embedding".into(), vec![v.width]),
        (
            "visual.positional_embedding".into(),
            vec![grid * grid + 1, v.width],
        ),
        (
            "visual.conv1.weight".into(),
            vec![v.width, 3, v.patch_size, v.patch_size],
        ),
        ("visual.ln_pre.weight".into(), vec![v.width]),
        ("visual.ln_pre.bias".into(), vec![v.width]),
    ];
    residual_blocks(
        &mut out,
        "visual.transformer.resblocks",
        v.layers,
        v.width,
        mlp[0],
    );
    out.extend([
        ("visual.ln_post.weight".into(), vec![v.width]),
        ("visual.ln_post.bias".into(), vec![v.width]),
        ("visual.proj".into(), vec![v.width, config.embed_dim]),
        ("token_embedding.weight".into(), vec![t.vocab_size, t.width]),
        (
            "positional_embedding".into(),
            vec![t.context_length, t.width],
        ),
    ]);
    residual_blocks(&mut out, "transformer.resblocks", t.layers, t.width, mlp[1]);
    out.extend([
        ("ln_final.weight".into(), vec![t.width]),
        ("ln_final.bias".into(), vec![t.width]),
        ("text_projection".into(), vec![t.width, config.embed_dim]),
        ("logit_scale".into(), vec![]),
    ]);
    out
}

fn residual_blocks(
    out: &mut Vec<(String, Vec<usize>)>,
    prefix: &str,
    layers: usize,
    w: usize,
    hidden: usize,
) {
    for i in 0..layers {
        let p = format!("{prefix}.{i}");
        out.extend([
            (format!("{p}.ln_1.weight"), vec![w]),
            (format!("{p}.ln_1.bias"), vec![w]),
            (format!("{p}.attn.in_proj_weight"), vec![3 * w, w]),
            (format!("{p}.attn.in_proj_bias"), vec![3 * w]),
            (format!("{p}.attn.out_proj.weight"), vec![w, w]),
            (format!("{p}.attn.out_proj.bias"), vec![w]),
            (format!("{p}.ln_2.weight"), vec![w]),
            (format!("{p}.ln_2.bias"), vec![w]),
            (format!("{p}.mlp.c_fc.weight"), vec![hidden, w]),
            (format!("{p}.mlp.c_fc.bias"), vec![hidden]),
            (format!("{p}.mlp.c_proj.weight"), vec![w, hidden]),
            (format!("{p}.mlp.c_proj.bias"), vec![w]),
        ]);
    }
}
