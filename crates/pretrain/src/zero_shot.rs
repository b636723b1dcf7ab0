//! Zero-shot base-to-new evaluation of a pretrained CLIP on the world's benchmark, rendered in
//! memory: what [`pretrain`](crate::pretrain) reports during training and `mocoop pretrain` after it.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use image::RgbImage;
use mocoop_model::Clip;
use mocoop_model::clip::l2_normalize;
use mocoop_model::preprocess::{batch_tensor, normalize_chw};
use mocoop_model::templates::fill;
use mocoop_model::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};
use mocoop_world::{BenchSplit, BenchmarkConfig, Style};

/// Zero-shot accuracy in the base-to-new protocol, overall and per style.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotAccuracy {
    /// Accuracy on base-class images among the base classes.
    pub base: f32,
    /// Accuracy on new-class images among the new classes.
    pub new: f32,
    /// Harmonic mean of the two.
    pub hm: f32,
    /// `(style, base accuracy, new accuracy)` for every style.
    pub per_style: Vec<(Style, f32, f32)>,
}

/// Harmonic mean of two accuracies (0 when both are 0).
pub fn harmonic_mean(a: f32, b: f32) -> f32 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

/// Class embeddings: per class, the normalised mean of its templates' normalised text embeddings.
fn class_embeddings<B: Backend>(
    clip: &Clip<B>,
    classnames: &[String],
    templates: &[String],
    device: &B::Device,
) -> Tensor<B, 2> {
    let tokenizer = ClipTokenizer::embedded();
    let context = clip.config().text.context_length.min(CONTEXT_LENGTH);
    let rows: Vec<Tensor<B, 2>> = classnames
        .iter()
        .map(|class| {
            let tokens: Vec<Vec<u32>> = templates
                .iter()
                .map(|t| tokenizer.tokenize(&fill(t, class), context))
                .collect();
            clip.encode_text(&tokens, device).mean_dim(0)
        })
        .collect();
    l2_normalize(Tensor::cat(rows, 0))
}

/// Predicted class index of each image among `classes` (`[C, D]` normalised embeddings).
fn predict<B: Backend>(
    clip: &Clip<B>,
    classes: &Tensor<B, 2>,
    images: &[RgbImage],
    device: &B::Device,
) -> Vec<usize> {
    let size = clip.config().vision.image_size;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(256) {
        let pixels: Vec<Vec<f32>> = chunk.iter().map(normalize_chw).collect();
        let features = clip.encode_image(batch_tensor::<B>(&pixels, size, device));
        let scores = features.matmul(classes.clone().transpose());
        let best = scores.argmax(1).into_data().convert::<i64>();
        out.extend(
            best.to_vec::<i64>()
                .expect("indices")
                .into_iter()
                .map(|i| i as usize),
        );
    }
    out
}

/// Zero-shot base-to-new accuracy of `clip` on `split` of the benchmark (images rendered in memory,
/// identical to the written files), prompting with the given templates (ensembled).
pub fn zero_shot_base_new<B: Backend>(
    clip: &Clip<B>,
    bench: &BenchmarkConfig,
    split: BenchSplit,
    templates: &[String],
    device: &B::Device,
) -> ZeroShotAccuracy {
    let names = bench.classnames();
    let num_base = bench.base.len();
    let styles = &bench.styles;
    // (correct, total) per style, for base and new.
    let mut counts = vec![[(0usize, 0usize); 2]; styles.len()];
    for (half, range) in [(0, 0..num_base), (1, num_base..names.len())] {
        let classes = class_embeddings(clip, &names[range.clone()], templates, device);
        let mut images = Vec::new();
        let mut truth = Vec::new();
        for label in range.clone() {
            for index in 0..bench.per_class(split) {
                let (scene, image) = bench.sample(split, label, index);
                images.push(image);
                truth.push((label - range.start, scene.style));
            }
        }
        let predicted = predict(clip, &classes, &images, device);
        for (p, (label, style)) in predicted.into_iter().zip(truth) {
            let s = styles.iter().position(|x| *x == style).unwrap_or(0);
            counts[s][half].1 += 1;
            if p == label {
                counts[s][half].0 += 1;
            }
        }
    }
    let ratio = |(c, t): (usize, usize)| if t == 0 { 0.0 } else { c as f32 / t as f32 };
    let total = |half: usize| {
        counts
            .iter()
            .fold((0, 0), |(c, t), s| (c + s[half].0, t + s[half].1))
    };
    let (base, new) = (ratio(total(0)), ratio(total(1)));
    ZeroShotAccuracy {
        base,
        new,
        hm: harmonic_mean(base, new),
        per_style: styles
            .iter()
            .zip(&counts)
            .map(|(style, c)| (*style, ratio(c[0]), ratio(c[1])))
            .collect(),
    }
}
