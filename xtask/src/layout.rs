//! The tensors of a CLIP (a ViT or a ModifiedResNet image tower) in OpenAI layout, by name and
//! shape.
//!
//! This is the key layout of OpenAI's released checkpoints (and of open_clip's), which
//! `mocoop_model::weights` turns every format into; `convert` uses it to write exactly the model's
//! tensors, `bench` to materialise a random model of a given geometry.

use mocoop_model::ClipConfig;

/// Every tensor a CLIP of this geometry has, in OpenAI layout (`logit_scale` as a 0-d tensor),
/// with OpenAI's MLPs of four times the width.
pub fn openai_tensors(config: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    openai_tensors_with_mlp(config, [4 * config.vision.width, 4 * config.text.width])
}

/// [`openai_tensors`] with other MLP widths (image, text), as open_clip's `mlp_ratio` makes them
/// (ViT-g-14, ViT-bigG-14).
pub fn openai_tensors_with_mlp(config: &ClipConfig, mlp: [usize; 2]) -> Vec<(String, Vec<usize>)> {
    let t = &config.text;
    let mut out = match config.vision.resnet_stages {
        Some(stages) => resnet_tensors(config, stages),
        None => vit_tensors(config, mlp[0]),
    };
    out.extend([
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

/// The `visual.*` tensors of a ViT with image MLPs `mlp` wide.
fn vit_tensors(config: &ClipConfig, mlp: usize) -> Vec<(String, Vec<usize>)> {
    let v = &config.vision;
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
        mlp,
    );
    out.extend([
        ("visual.ln_post.weight".into(), vec![v.width]),
        ("visual.ln_post.bias".into(), vec![v.width]),
        ("visual.proj".into(), vec![v.width, config.embed_dim]),
    ]);
    out
}

/// The `visual.*` tensors of OpenAI's ModifiedResNet with `stages` bottleneck blocks: the stem's
/// three convolutions (to half the width, half, the width) and BatchNorms, the blocks (1×1, 3×3,
/// 1×1 to 4× their width; a downsample branch where the size or width changes), and the
/// attention pooling over the `width * 32` channels of the last stage.
fn resnet_tensors(config: &ClipConfig, stages: [usize; 4]) -> Vec<(String, Vec<usize>)> {
    let v = &config.vision;
    let (w, half) = (v.width, v.width / 2);
    let mut out = Vec::new();
    for (i, [o, inp]) in [[half, 3], [half, half], [w, half]].into_iter().enumerate() {
        conv_bn(
            &mut out,
            &format!("visual.conv{}", i + 1),
            &format!("visual.bn{}", i + 1),
            [o, inp, 3],
        );
    }
    let mut inplanes = w;
    for (i, blocks) in stages.into_iter().enumerate() {
        let planes = w << i;
        for j in 0..blocks {
            let p = format!("visual.layer{}.{j}", i + 1);
            let inp = if j == 0 { inplanes } else { 4 * planes };
            for (k, [o, n, size]) in [
                [planes, inp, 1],
                [planes, planes, 3],
                [4 * planes, planes, 1],
            ]
            .into_iter()
            .enumerate()
            {
                conv_bn(
                    &mut out,
                    &format!("{p}.conv{}", k + 1),
                    &format!("{p}.bn{}", k + 1),
                    [o, n, size],
                );
            }
            if j == 0 && (i > 0 || inp != 4 * planes) {
                let d = format!("{p}.downsample");
                conv_bn(
                    &mut out,
                    &format!("{d}.0"),
                    &format!("{d}.1"),
                    [4 * planes, inp, 1],
                );
            }
        }
        inplanes = 4 * planes;
    }
    let (c, grid) = (inplanes, v.grid_size());
    out.push((
        "visual.attnpool.positional_embedding".into(),
        vec![grid * grid + 1, c],
    ));
    for (name, d_out) in [
        ("q_proj", c),
        ("k_proj", c),
        ("v_proj", c),
        ("c_proj", config.embed_dim),
    ] {
        out.push((format!("visual.attnpool.{name}.weight"), vec![d_out, c]));
        out.push((format!("visual.attnpool.{name}.bias"), vec![d_out]));
    }
    out
}

/// A bias-free convolution `[out, in, k, k]` and the BatchNorm after it (scale, shift, running
/// mean and variance).
fn conv_bn(out: &mut Vec<(String, Vec<usize>)>, conv: &str, bn: &str, [o, inp, k]: [usize; 3]) {
    out.push((format!("{conv}.weight"), vec![o, inp, k, k]));
    for name in ["weight", "bias", "running_mean", "running_var"] {
        out.push((format!("{bn}.{name}"), vec![o]));
    }
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
