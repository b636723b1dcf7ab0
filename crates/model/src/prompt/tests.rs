//! Tests of the prompt pool, router, mixture and the CoOp / zero-shot special cases on a tiny
//! random CLIP.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::Clip;
use crate::clip::l2_normalize;
use crate::config::ClipConfig;
use crate::templates::{TemplateGroups, fill};
use crate::tokenizer::ClipTokenizer;
use crate::weights::{LoadedWeights, StateDict, WeightLayout};

type B = Flex;
type AD = Autodiff<Flex>;

fn tiny_clip<Bk: burn::tensor::backend::Backend>(seed: u64) -> Clip<Bk> {
    let weights = LoadedWeights {
        config: ClipConfig::tiny(),
        state: StateDict::random(seed),
        layout: WeightLayout::OpenAi,
    };
    Clip::from_weights(weights, &Default::default()).unwrap()
}

fn tok() -> &'static ClipTokenizer {
    ClipTokenizer::embedded()
}

fn groups() -> TemplateGroups {
    TemplateGroups::new(
        "test",
        vec![
            vec!["a photo of a {}.".into(), "a photo of the {}.".into()],
            vec!["{} texture.".into()],
            vec!["a low resolution photo of the {}, a type of pet.".into()],
        ],
    )
    .unwrap()
}

fn classes() -> Vec<String> {
    ["cat", "golden retriever", "sea turtle", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn values<const D: usize, Bk: burn::tensor::backend::Backend>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
}

fn random_features(n: usize, d: usize, seed: u64) -> Tensor<B, 2> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    l2_normalize(Tensor::from_data(
        TensorData::new(v, [n, d]),
        &Default::default(),
    ))
}

#[test]
fn initial_soft_prompts_reproduce_their_hard_templates() {
    // With contexts initialised from the template's words and w = 0, every z[g, c] must equal the
    // frozen encoder's feature of the filled first template: this checks the fixed/context
    // assembly, the per-row EOT positions and the sequence cut.
    let clip = tiny_clip::<B>(1);
    let device = Default::default();
    let config = MixtureConfig::mocoop(&groups(), 2, 7);
    let mixture = MixtureOfPrompts::new(config, &clip, tok(), &device).unwrap();
    let prompts = mixture
        .class_prompts(&clip.text, tok(), &classes(), &device)
        .unwrap();
    let z = mixture.text_features(&clip.text, &prompts);
    assert_eq!(z.dims(), [3, 4, 16]);
    let firsts: Vec<Vec<String>> = groups()
        .groups()
        .iter()
        .map(|g| vec![g[0].clone()])
        .collect();
    let hard = HardPrompts::from_groups(&clip, tok(), &firsts, &classes(), &device).unwrap();
    assert_close(
        &values(z.clone()),
        &values(hard.features.clone()),
        2e-5,
        "z vs hard",
    );

    // Chunked encoding gives the same features.
    let chunked = mixture.text_features_chunked(&clip.text, &prompts, 5);
    assert_close(&values(z.clone()), &values(chunked), 2e-5, "chunked");

    // Encoding only some experts gives their features in place and zeros elsewhere.
    let some = mixture.text_features_of(&clip.text, &prompts, &[false, true, false]);
    assert_eq!(some.dims(), [3, 4, 16]);
    let expert = |t: &Tensor<B, 3>, g: usize| values(t.clone().narrow(0, g, 1));
    assert_close(&expert(&some, 1), &expert(&z, 1), 2e-5, "encoded expert");
    for g in [0, 2] {
        assert!(expert(&some, g).iter().all(|&v| v == 0.0), "expert {g}");
    }

    // And the hard features are those of the filled strings.
    let text = fill(
        "a low resolution photo of the {}, a type of pet.",
        "sea turtle",
    );
    let direct = clip.encode_text(&[tok().tokenize(&text, 77)], &device);
    assert_close(
        &values(hard.template(2).narrow(0, 2, 1)),
        &values(direct),
        1e-6,
        "direct",
    );
}

#[test]
fn prototypes_and_ensemble() {
    let clip = tiny_clip::<B>(2);
    let device = Default::default();
    let hard = HardPrompts::new(&clip, tok(), &groups(), &classes(), &device).unwrap();
    assert_eq!(hard.features.dims(), [4, 4, 16]);
    let protos = hard.prototypes();
    assert_eq!(protos.dims(), [3, 4, 16]);
    let expected0 = l2_normalize((hard.template(0) + hard.template(1)) / 2.0);
    assert_close(
        &values(protos.clone().narrow(0, 0, 1).reshape([4, 16])),
        &values(expected0),
        1e-6,
        "prototype of group 0",
    );
    assert_close(
        &values(protos.clone().narrow(0, 1, 1).reshape([4, 16])),
        &values(hard.template(2)),
        1e-6,
        "single-template prototype",
    );
    let sum: Tensor<B, 2> = (0..4)
        .map(|t| hard.template(t))
        .reduce(|a, b| a + b)
        .unwrap();
    assert_close(
        &values(hard.ensemble()),
        &values(l2_normalize(sum)),
        1e-6,
        "ensemble",
    );
    assert_eq!(hard.class_agnostic_prototypes().dims(), [3, 16]);
    let sub = hard.select_classes(&[2, 0]);
    assert_close(
        &values(sub.template(0).narrow(0, 1, 1)),
        &values(hard.template(0).narrow(0, 0, 1)),
        0.0,
        "select",
    );
}

#[test]
fn top_k_gates_are_a_softmax_over_the_selected_logits() {
    let device = Default::default();
    let logits = Tensor::<B, 2>::from_data([[1.0, 3.0, 2.0, -1.0], [0.5, 0.0, -2.0, 4.0]], &device);
    let gates = values(top_k_gates(logits.clone(), 2));
    let e = |a: f32, b: f32| (a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp()));
    let (g1, g2) = e(3.0, 2.0);
    let (h1, h2) = e(4.0, 0.5);
    assert_close(&gates, &[0.0, g1, g2, 0.0, h2, 0.0, 0.0, h1], 1e-6, "top-2");
    let all = values(top_k_gates(logits.clone(), 4));
    let soft = values(burn::tensor::activation::softmax(logits.clone(), 1));
    assert_close(&all, &soft, 1e-7, "k = E");
    assert_close(
        &values(top_k_gates(logits, 1)),
        &[0., 1., 0., 0., 0., 0., 0., 1.],
        0.0,
        "k=1",
    );
}

#[test]
fn top_k_gates_have_finite_gradients_only_on_selected_logits() {
    let device = Default::default();
    let logits = Tensor::<AD, 2>::from_data([[1.0, 3.0, 2.0, -1.0]], &device).require_grad();
    let weights = Tensor::<AD, 2>::from_data([[1.0, 2.0, 3.0, 4.0]], &device);
    let loss = (top_k_gates(logits.clone(), 2) * weights).sum();
    let grads = loss.backward();
    let g = values(logits.grad(&grads).unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    assert_eq!((g[0], g[3]), (0.0, 0.0));
    assert!(g[1] != 0.0 && g[2] != 0.0);
}

#[test]
fn mixture_logits_match_the_explicit_mixture() {
    let (n, e, c, d) = (3, 4, 5, 16);
    let f = random_features(n, d, 1);
    let z = random_features(e * c, d, 2).reshape([e, c, d]);
    let gates = top_k_gates(random_features(n, e, 3) * 3.0, 2);
    let gates_v = values(gates.clone());
    let (fv, zv) = (values(f.clone()), values(z.clone()));
    for renormalize in [false, true] {
        let got = values(mix_logits(
            f.clone(),
            z.clone(),
            gates.clone(),
            renormalize,
            10.0,
        ));
        let mut expected = vec![0f32; n * c];
        for i in 0..n {
            for k in 0..c {
                let mut t = vec![0f32; d];
                for g in 0..e {
                    for j in 0..d {
                        t[j] += gates_v[i * e + g] * zv[(g * c + k) * d + j];
                    }
                }
                let norm = if renormalize {
                    t.iter().map(|v| v * v).sum::<f32>().sqrt()
                } else {
                    1.0
                };
                expected[i * c + k] =
                    10.0 * (0..d).map(|j| fv[i * d + j] * t[j]).sum::<f32>() / norm;
            }
        }
        assert_close(&got, &expected, 1e-5, &format!("renormalize={renormalize}"));
    }
}

#[test]
fn coop_and_zero_shot_are_special_cases() {
    let clip = tiny_clip::<B>(3);
    let device = Default::default();
    let init = ExpertInit::Template {
        template: "a photo of a {}.".into(),
    };
    let coop = MixtureOfPrompts::new(MixtureConfig::coop(init, 0), &clip, tok(), &device).unwrap();
    assert!(coop.router.is_none() && coop.text_bias.is_none());
    assert_eq!(coop.tensors().len(), 1);
    let prompts = coop
        .class_prompts(&clip.text, tok(), &classes(), &device)
        .unwrap();
    let scale = clip.logit_scale();
    let classifier = coop.classifier(&clip.text, &prompts, scale, 3);
    let f = random_features(2, 16, 4);
    let logits = values(classifier.logits(f.clone()));

    // Zero-shot CLIP with the same template gives the same logits (untrained CoOp = zero-shot).
    let single = vec![vec!["a photo of a {}.".to_string()]];
    let hard = HardPrompts::from_groups(&clip, tok(), &single, &classes(), &device).unwrap();
    let zero_shot = PromptClassifier::zero_shot(hard.template(0), scale);
    let expected = values(f.clone().matmul(hard.template(0).transpose()) * scale.exp());
    assert_close(
        &values(zero_shot.logits(f.clone())),
        &expected,
        1e-4,
        "zero-shot",
    );
    assert_close(&logits, &expected, 1e-3, "coop vs zero-shot");

    // The ensemble classifier uses the normalised mean of all templates.
    let hard = HardPrompts::new(&clip, tok(), &groups(), &classes(), &device).unwrap();
    let ensemble = PromptClassifier::ensemble(&hard, scale);
    let expected = values(f.clone().matmul(hard.ensemble().transpose()) * scale.exp());
    assert_close(&values(ensemble.logits(f)), &expected, 1e-4, "ensemble");

    // Random CoOp context.
    let init = ExpertInit::Random {
        n_ctx: 4,
        std: 0.02,
    };
    let coop = MixtureOfPrompts::new(MixtureConfig::coop(init, 9), &clip, tok(), &device).unwrap();
    let ctx = values(coop.pool.ctx[0].as_ref().unwrap().val());
    assert_eq!(ctx.len(), 4 * 32);
    let std = (ctx.iter().map(|v| v * v).sum::<f32>() / ctx.len() as f32).sqrt();
    assert!((0.01..0.03).contains(&std), "{std}");
}

#[test]
fn classifier_matches_the_training_path() {
    let clip = tiny_clip::<B>(4);
    let device = Default::default();
    let mixture = MixtureOfPrompts::new(
        MixtureConfig::mocoop(&groups(), 2, 3),
        &clip,
        tok(),
        &device,
    )
    .unwrap();
    let prompts = mixture
        .class_prompts(&clip.text, tok(), &classes(), &device)
        .unwrap();
    let f = random_features(5, 16, 5);
    let z = mixture.text_features(&clip.text, &prompts);
    let gates = mixture.gates(mixture.router_logits(f.clone()), 5, &device);
    let gv = values(gates.clone());
    for row in gv.chunks(3) {
        assert_eq!(row.iter().filter(|&&g| g > 0.0).count(), 2, "{row:?}");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    let train = values(mixture.logits(f.clone(), z, gates, 2.0f32.exp()));
    let classifier = mixture.classifier(&clip.text, &prompts, 2.0, 4);
    assert_close(
        &values(classifier.logits(f)),
        &train,
        1e-4,
        "cached classifier",
    );
}

#[test]
fn checkpoint_tensors_round_trip_and_reject_wrong_expert_counts() {
    let clip = tiny_clip::<B>(5);
    let device = Default::default();
    let config = MixtureConfig::mocoop(&groups(), 2, 11);
    let trained = MixtureOfPrompts::new(config.clone(), &clip, tok(), &device).unwrap();
    // Perturb every tensor so that a silent non-load would be noticed.
    let mut saved: BTreeMap<String, TensorData> = trained
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let shifted: Vec<f32> = v.to_vec::<f32>().unwrap().iter().map(|x| x + 0.5).collect();
            (k, TensorData::new(shifted, v.shape.clone()))
        })
        .collect();
    let names: Vec<_> = saved.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "ctx.0",
            "ctx.1",
            "ctx.2",
            "router.bias",
            "router.weight",
            "text_bias"
        ]
    );
    let expected = saved.clone();
    let fresh = MixtureOfPrompts::new(config.clone(), &clip, tok(), &device).unwrap();
    let loaded = fresh.load_tensors(&mut saved, &device).unwrap();
    assert!(saved.is_empty());
    for (name, data) in loaded.tensors() {
        assert_close(
            &data.to_vec::<f32>().unwrap(),
            &expected[&name].to_vec::<f32>().unwrap(),
            0.0,
            &name,
        );
    }

    // A configuration with one expert fewer cannot take these tensors.
    let mut fewer = config.clone();
    fewer.experts.pop();
    let small = MixtureOfPrompts::new(fewer, &clip, tok(), &device).unwrap();
    let err = small
        .load_tensors(&mut expected.clone(), &device)
        .unwrap_err();
    assert!(err.to_string().contains("wrong number of experts"), "{err}");
    // And a CoOp model cannot take a MoCoOp checkpoint.
    let init = ExpertInit::Template {
        template: "a photo of a {}.".into(),
    };
    let coop = MixtureOfPrompts::new(MixtureConfig::coop(init, 0), &clip, tok(), &device).unwrap();
    assert!(coop.load_tensors(&mut expected.clone(), &device).is_err());
}

#[test]
fn bad_configurations_are_errors() {
    let clip = tiny_clip::<B>(6);
    let device = Default::default();
    let mut config = MixtureConfig::mocoop(&groups(), 4, 0);
    let err = MixtureOfPrompts::new(config.clone(), &clip, tok(), &device).unwrap_err();
    assert!(err.to_string().contains("top-k"), "{err}");
    config.top_k = 2;
    config.experts[0] = ExpertInit::Template {
        template: "no placeholder".into(),
    };
    let err = MixtureOfPrompts::new(config, &clip, tok(), &device).unwrap_err();
    assert!(err.to_string().contains("{}"), "{err}");

    let mixture = MixtureOfPrompts::new(
        MixtureConfig::mocoop(&groups(), 2, 0),
        &clip,
        tok(),
        &device,
    )
    .unwrap();
    let long = vec!["cat".to_string(), "word ".repeat(70)];
    let err = mixture
        .class_prompts(&clip.text, tok(), &long, &device)
        .unwrap_err();
    assert!(err.to_string().contains("word word"), "{err}");
    let err = HardPrompts::new(&clip, tok(), &groups(), &long, &device).unwrap_err();
    assert!(err.to_string().contains("context length"), "{err}");
}

/// A frozen tiny CLIP (weights from `seed`) under autodiff, a trainable mixture over its
/// [`groups`] (initialised from `mixture_seed`) and its prompts for [`classes`].
fn frozen_clip_and_mixture(
    seed: u64,
    mixture_seed: u64,
) -> (Clip<AD>, MixtureOfPrompts<AD>, ClassPrompts<AD>) {
    let clip = tiny_clip::<AD>(seed).no_grad();
    let (mixture, prompts) = mixture_and_prompts(&clip, &classes(), mixture_seed);
    (clip, mixture, prompts)
}

/// A mixture over [`groups`] (initialised from `mixture_seed`) and its prompts for `names`.
fn mixture_and_prompts<Bk: burn::tensor::backend::Backend>(
    clip: &Clip<Bk>,
    names: &[String],
    mixture_seed: u64,
) -> (MixtureOfPrompts<Bk>, ClassPrompts<Bk>) {
    let device = Default::default();
    let config = MixtureConfig::mocoop(&groups(), 2, mixture_seed);
    let mixture = MixtureOfPrompts::new(config, clip, tok(), &device).unwrap();
    let prompts = mixture
        .class_prompts(&clip.text, tok(), names, &device)
        .unwrap();
    (mixture, prompts)
}

/// The values of `z`, then every context's gradient of `sum(z * weights)`; and the gradients.
fn with_context_grads(
    mixture: &MixtureOfPrompts<AD>,
    z: Tensor<AD, 3>,
    weights: &Tensor<AD, 3>,
) -> (
    Vec<f32>,
    <AD as burn::tensor::backend::AutodiffBackend>::Gradients,
) {
    let grads = (z.clone() * weights.clone()).sum().backward();
    let mut out = values(z);
    for ctx in mixture.pool.ctx.iter().flatten() {
        out.extend(values(ctx.grad(&grads).expect("context gradient")));
    }
    (out, grads)
}

#[test]
fn gradients_reach_contexts_bias_and_router_only() {
    let (clip, mixture, prompts) = frozen_clip_and_mixture(7, 0);
    let device = Default::default();
    let f = Tensor::<AD, 2>::from_inner(random_features(3, 16, 8));
    let z = mixture.text_features(&clip.text, &prompts);
    let gates = mixture.gates(mixture.router_logits(f.clone()), 3, &device);
    let logits = mixture.logits(f, z, gates, 10.0);
    let grads = logits.narrow(1, 0, 1).sum().backward();
    for ctx in mixture.pool.ctx.iter().flatten() {
        let g = values(ctx.grad(&grads).expect("context gradient"));
        assert!(g.iter().any(|v| *v != 0.0) && g.iter().all(|v| v.is_finite()));
    }
    assert!(mixture.text_bias.as_ref().unwrap().grad(&grads).is_some());
    assert!(
        mixture
            .router
            .as_ref()
            .unwrap()
            .weight
            .grad(&grads)
            .is_some()
    );
    let params = burn::optim::GradientsParams::from_grads(grads, &clip);
    assert!(
        params.is_empty(),
        "frozen CLIP got {} gradients",
        params.len()
    );
}

#[test]
fn an_expert_without_context_words_is_its_fixed_template() {
    let clip = tiny_clip::<B>(8);
    let device = Default::default();
    let groups = TemplateGroups::new(
        "test",
        vec![vec!["{}.".into()], vec!["a photo of a {}.".into()]],
    )
    .unwrap();
    let mixture =
        MixtureOfPrompts::new(MixtureConfig::mocoop(&groups, 1, 0), &clip, tok(), &device).unwrap();
    assert!(mixture.pool.ctx[0].is_none() && mixture.pool.ctx[1].is_some());
    let prompts = mixture
        .class_prompts(&clip.text, tok(), &classes(), &device)
        .unwrap();
    let z = mixture.text_features(&clip.text, &prompts);
    let hard = HardPrompts::new(&clip, tok(), &groups, &classes(), &device).unwrap();
    assert_close(&values(z), &values(hard.features), 2e-5, "z vs hard");
    let mut saved: BTreeMap<String, TensorData> = mixture.tensors().into_iter().collect();
    assert!(!saved.contains_key("ctx.0") && saved.contains_key("ctx.1"));
    let fresh =
        MixtureOfPrompts::new(MixtureConfig::mocoop(&groups, 1, 5), &clip, tok(), &device).unwrap();
    assert!(fresh.load_tensors(&mut saved, &device).is_ok());
}

#[test]
fn text_split_across_devices_gives_the_same_features_and_gradients() {
    // The CPU backend has one device, so the shards share it: this checks the row split, the
    // order of the gathered features and that gradients come back through the shards' copies.
    let (clip, mixture, prompts) = frozen_clip_and_mixture(9, 3);
    let device = Default::default();
    // A fixed random weighting of every feature, so that each row's gradient differs.
    let weights = Tensor::<AD, 2>::from_inner(random_features(12, 16, 4)).reshape([3, 4, 16]);
    let run = |z: Tensor<AD, 3>| {
        let (mut out, grads) = with_context_grads(&mixture, z, &weights);
        out.extend(values(
            mixture.text_bias.as_ref().unwrap().grad(&grads).unwrap(),
        ));
        let frozen = burn::optim::GradientsParams::from_grads(grads, &clip);
        assert!(frozen.is_empty(), "frozen CLIP got gradients");
        out
    };
    let whole = run(mixture.text_features(&clip.text, &prompts));
    // 12 rows over 2, 5 and 13 devices: even shares, uneven ones, and devices left without rows.
    for (devices, shards) in [(2, 1), (5, 4), (13, 11)] {
        let split = TextShard::split(&clip.text, &prompts, &vec![device; devices]);
        assert_eq!(split.len(), shards, "{devices} devices");
        let starts: Vec<usize> = split.iter().map(TextShard::start).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]) && starts[0] > 0);
        let z = mixture.text_features_sharded(&clip.text, &prompts, &split);
        assert_eq!(z.dims(), [3, 4, 16]);
        assert_close(&run(z), &whole, 1e-6, &format!("{devices} devices"));
    }
}

#[test]
fn prompts_encoded_in_buckets_of_similar_length_match_their_templates() {
    // 3 experts of different template lengths and 40 class names of 1 to 4 words: 120 prompts of
    // many lengths, so that they are encoded in several buckets, each cut after its own last EOT,
    // and put back in row order. The hand-written templates' features are computed from the
    // filled strings, one padded batch, independently of the buckets.
    let words = [
        "cat",
        "golden retriever",
        "big sea turtle",
        "very small red fox",
    ];
    let names: Vec<String> = (0..40).map(|i| format!("{} {i}", words[i % 4])).collect();
    let firsts: Vec<Vec<String>> = groups()
        .groups()
        .iter()
        .map(|g| vec![g[0].clone()])
        .collect();
    let clip = tiny_clip::<B>(11);
    let (mixture, prompts) = mixture_and_prompts(&clip, &names, 1);
    let z = mixture.text_features(&clip.text, &prompts);
    let hard =
        HardPrompts::from_groups(&clip, tok(), &firsts, &names, &Default::default()).unwrap();
    assert_close(&values(z), &values(hard.features), 2e-5, "z vs hard");

    // Under autodiff, one prompt per pass gives the same features and context gradients.
    let clip = tiny_clip::<AD>(11).no_grad();
    let (mixture, prompts) = mixture_and_prompts(&clip, &names, 1);
    let weights = Tensor::<AD, 2>::from_inner(random_features(120, 16, 5)).reshape([3, 40, 16]);
    let run = |chunk: usize| {
        let z = mixture.text_features_chunked(&clip.text, &prompts, chunk);
        with_context_grads(&mixture, z, &weights).0
    };
    assert_close(
        &run(usize::MAX),
        &run(1),
        1e-5,
        "buckets vs one prompt per pass",
    );
}

#[test]
fn a_mixture_adopts_the_tensors_whose_shapes_match_as_the_official_code_loads_them() {
    use crate::templates::TemplateTable;
    let clip = tiny_clip::<B>(7);
    let official = TemplateTable::official();
    let words = LayoutOptions {
        context_count: ContextCount::Words,
        classify_without_period: true,
    };
    let config = |dataset: &str, seed: u64| MixtureConfig {
        layout: words,
        ..MixtureConfig::mocoop(&official.groups(dataset).unwrap(), 2, seed)
    };
    let device = Default::default();
    let source = MixtureOfPrompts::<B>::new(config("imagenet", 1), &clip, tok(), &device).unwrap();
    let fresh = MixtureOfPrompts::<B>::new(config("imagenet_a", 2), &clip, tok(), &device).unwrap();
    let untouched = fresh.clone();
    let (target, dropped) = fresh.adopt_matching(&source);
    assert_eq!((source.num_experts(), target.num_experts()), (20, 16));
    // 20 router rows against 16: the router stays fresh, and so does every context whose part
    // before or after the class name differs in length (the groups are other templates from
    // the fourth on: 16 groups against 20).
    assert!(dropped.contains(&"gate.weight".to_string()), "{dropped:?}");
    assert!(!dropped.contains(&"w".to_string()), "{dropped:?}");
    let router = |m: &MixtureOfPrompts<B>| values(m.router.as_ref().unwrap().weight.val());
    assert_eq!(router(&target), router(&untouched));
    for g in 0..16 {
        let layout = |m: &MixtureOfPrompts<B>| {
            let l = &m.pool.layouts()[g];
            (l.before, l.after)
        };
        let ctx = |m: &MixtureOfPrompts<B>| m.pool.ctx[g].as_ref().map(|c| values(c.val()));
        let (ours, theirs) = (layout(&target), layout(&source));
        let kept_before = ours.0 == theirs.0;
        assert_eq!(
            dropped.contains(&format!("ctx_before_{g}")),
            !kept_before,
            "expert {g}: {ours:?} vs {theirs:?}"
        );
        if ours == theirs {
            assert_eq!(ctx(&target), ctx(&source), "expert {g} is adopted whole");
        }
    }
    // The first four groups are the same templates: adopted whole.
    assert!(
        !dropped
            .iter()
            .any(|d| d.ends_with("_0") || d.ends_with("_3")),
        "{dropped:?}"
    );
}

#[test]
fn deep_text_prompts_cut_at_the_eot_equal_the_77_position_path() {
    // MaPLe's layout (2 learned tokens after SOT, "of a" fixed) over 40 class names of many
    // lengths, with tokens for two layers past the first: encoded in buckets, each cut after its
    // own last EOT, and as whole 77-position rows in one pass.
    let clip = crate::clip::deep::three_layer_clip::<B>(3);
    let device = Default::default();
    let init = ExpertInit::Leading {
        text: "a photo of a".into(),
        n_ctx: 2,
    };
    let mixture =
        MixtureOfPrompts::new(MixtureConfig::coop(init, 0), &clip, tok(), &device).unwrap();
    let words = [
        "cat",
        "golden retriever",
        "big sea turtle",
        "very small red fox",
    ];
    let names: Vec<String> = (0..40).map(|i| format!("{} {i}", words[i % 4])).collect();
    let prompts = mixture
        .class_prompts(&clip.text, tok(), &names, &device)
        .unwrap();
    let deep = crate::clip::DeepPrompts {
        start: 1,
        layers: (0..2)
            .map(|k| random_features(2, 32, 20 + k) * 4.0)
            .collect(),
    };
    let table = mixture.pool.table(&device);
    let cut = prompts.encode_prompted(&clip.text, table.clone(), &deep, 16);
    let x = prompts.fixed.clone()
        + burn::tensor::module::embedding(table.clone(), prompts.ctx_index.clone());
    let [rows, len, width] = x.dims();
    let x = Tensor::cat(vec![x, Tensor::zeros([rows, 77 - len, width], &device)], 1);
    let full = clip.text.forward_prompted(x, &prompts.eot, &deep);
    assert_close(
        &values(cut.clone()),
        &values(full),
        1e-5,
        "cut vs 77 positions",
    );
    let plain = prompts.encode_prompted(&clip.text, table, &crate::clip::DeepPrompts::none(), 16);
    let (cut, plain) = (values(cut), values(plain));
    let moved = cut
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-3, "the deep prompts change nothing ({moved})");
}
