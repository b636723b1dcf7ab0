//! The training-step fixture, generic over the autodiff backend: the PyTorch reference's steps in
//! `tests/fixtures/train_step.json` (written by `tests/fixtures/make_reference.py
//! --train-step-only`), and a check of one step of MoCoOp or a CoOp-based method against them. Used by the train
//! package's `reference_step` tests on the CPU and by the CLI package's WGPU tests (they build
//! Burn's WGPU backend, which the train package's tests do not).

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor, TensorData};
use serde_json::Value;

use mocoop_data::ImageBatch;
use mocoop_model::preprocess::{batch_tensor, load_rgb, preprocess};
use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, Precision};
use mocoop_train::config::{
    DataConfig, DeepPromptConfig, GatePrototypes, GateTarget, KgDistance, LossConfig, Method,
    ProGradConfig, ProjectionScope, Setting, TextClasses, TextTarget, TrainConfig, ZeroShotPrompts,
};
use mocoop_train::loss_scale::LossScale;
use mocoop_train::model::visual_ln_params;
use mocoop_train::{ClassSetup, MocoopModel, Recipe, StepTerms};

use crate::reference::fixtures;

pub(crate) fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number array: {other}"),
    }
}

pub(crate) fn shape(v: &Value) -> Vec<usize> {
    match v {
        Value::Array(items) => {
            let mut s = vec![items.len()];
            if let Some(first) = items.first() {
                s.extend(shape(first));
            }
            s
        }
        _ => Vec::new(),
    }
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A tensor's values as f32, whatever its dtype.
pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Agreement asked of each precision, relative to the largest reference magnitude (at least 1).
pub(crate) fn tolerance(precision: Precision) -> f32 {
    match precision {
        Precision::F32 => 1e-4,
        Precision::F16 => 1e-2,
        Precision::Bf16 => 5e-2,
    }
}

pub(crate) fn check(got: &[f32], expected: &[f32], what: &str, tolerance: f32) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: not finite");
    let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= tolerance * scale,
        "{what}: max |diff| {worst} (scale {scale})\n got {:?}\n ref {:?}",
        &got[..got.len().min(6)],
        &expected[..expected.len().min(6)]
    );
}

/// A step's loss terms and their weighted total (`total`) against a fixture case's `terms`: the
/// same names, each value within `check(got, expected, what)`.
pub(crate) fn check_terms<B: Backend>(
    terms: &StepTerms<B>,
    expected: &Value,
    name: &str,
    check: impl Fn(&[f32], &[f32], &str),
) {
    let mut got: BTreeMap<String, f32> = terms
        .terms
        .iter()
        .map(|(k, v)| (k.to_string(), values(v.clone())[0]))
        .collect();
    got.insert("total".into(), values(terms.loss.clone())[0]);
    let expected = expected.as_object().unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{name}: terms"
    );
    for (k, v) in expected {
        let want = v.as_f64().unwrap() as f32;
        check(&[got[k]], &[want], &format!("{name}: term {k}"));
    }
}

/// Named trainable parameters of the model, as (fixture name, id, value, transpose?).
pub fn named_params<B: AutodiffBackend>(
    model: &MocoopModel<B>,
) -> Vec<(String, ParamId, Vec<f32>, bool)> {
    let mut out = Vec::new();
    for (g, ctx) in model.mixture.pool.ctx.iter().enumerate() {
        if let Some(ctx) = ctx {
            out.push((format!("ctx.{g}"), ctx.id, values(ctx.val()), false));
        }
    }
    if let Some(w) = &model.mixture.text_bias {
        out.push(("text_bias".into(), w.id, values(w.val()), false));
    }
    if let Some(r) = &model.mixture.router {
        out.push((
            "router.weight".into(),
            r.weight.id,
            values(r.weight.val().transpose()),
            true,
        ));
        let b: &Param<Tensor<B, 1>> = r.bias.as_ref().unwrap();
        out.push(("router.bias".into(), b.id, values(b.val()), false));
    }
    if model.settings.loss.lambda_gate > 0.0 || !model.ln_param_ids().is_empty() {
        for (name, p) in visual_ln_params(&model.clip) {
            if model.ln_param_ids().contains(&p.id) && p.is_require_grad() {
                out.push((name, p.id, values(p.val()), false));
            }
        }
    }
    out
}

/// The types of the trainable tensors.
fn trainable_dtypes<B: AutodiffBackend>(model: &MocoopModel<B>) -> Vec<DType> {
    let mut out: Vec<DType> = model
        .mixture
        .pool
        .ctx
        .iter()
        .flatten()
        .map(|c| c.val().dtype())
        .collect();
    out.extend(model.mixture.text_bias.iter().map(|w| w.val().dtype()));
    out.extend(model.mixture.router.iter().map(|r| r.weight.val().dtype()));
    out.extend(
        visual_ln_params(&model.clip)
            .iter()
            .map(|(_, p)| p.val().dtype()),
    );
    out
}

fn grad_values<B: AutodiffBackend>(
    grads: &GradientsParams,
    id: ParamId,
    rank: usize,
    transpose: bool,
) -> Vec<f32> {
    if rank == 1 {
        let g = grads.get::<B::InnerBackend, 1>(id).expect("a gradient");
        assert_eq!(g.dtype(), DType::F32, "gradients of master copies are f32");
        return g.into_data().to_vec::<f32>().unwrap();
    }
    let g = grads.get::<B::InnerBackend, 2>(id).expect("a gradient");
    assert_eq!(g.dtype(), DType::F32, "gradients of master copies are f32");
    let g = if transpose { g.transpose() } else { g };
    g.into_data().to_vec::<f32>().unwrap()
}

/// A loss scale at which the f16 gradients of the fixture's steps are finite (the default 2^16
/// overflows here: a real run skips its first steps until the scale has come down this far).
pub const IN_RANGE: LossScale = LossScale {
    scale: 1024.0,
    good_steps: 0,
    skipped: 0,
};

/// A run of `method` on the fixture CLIP (`openclip_quickgelu.safetensors`) over a dataset named
/// `test` that is never read, for tests that build a method's model or run directory directly:
/// few-shot, batch 4, the method's recipe for 5 epochs, no router noise.
pub fn fixture_config(
    method: Method,
    mixture: MixtureConfig,
    loss: LossConfig,
    ln_tuning: bool,
) -> TrainConfig {
    TrainConfig {
        method,
        recipe: Default::default(),
        weights: fixtures().join("openclip_quickgelu.safetensors"),
        load: Default::default(),
        precision: Default::default(),
        data: DataConfig {
            dataset: "test".into(),
            root: "unused".into(),
            setting: Setting::Fewshot,
            shots: 1,
            seed: 1,
            batch_size: 4,
            workers: 0,
            groups_file: None,
            skip_bad_images: false,
            official_templates: false,
        },
        mixture,
        loss,
        optim: Recipe::for_run(method, "test").optim(4, 5),
        ln_tuning,
        router_noise: 0.0,
        validate: false,
        zero_shot: ZeroShotPrompts::Ensemble,
        cached_views: 0,
        deep: DeepPromptConfig::official(method),
    }
}

/// The reference's optimiser: PyTorch's SGD with momentum 0.9, no dampening, and L2 weight decay.
pub(crate) fn reference_sgd(weight_decay: f32) -> SgdConfig {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }))
        .with_weight_decay(Some(WeightDecayConfig {
            penalty: weight_decay,
        }))
}

/// `tests/fixtures/train_step.json`.
pub(crate) fn read_fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("train_step.json"))
        .expect("tests/fixtures/train_step.json: run make_reference.py --train-step-only");
    serde_json::from_str(&text).unwrap()
}

/// A step's inputs.
pub type Batches<B> = Box<dyn Fn() -> ImageBatch<B>>;

/// The model of fixture case `name` at `precision`, initialised like the reference, the case's
/// expected values and its batch.
pub fn setup<B: AutodiffBackend>(
    name: &str,
    precision: Precision,
    device: &B::Device,
) -> (MocoopModel<B>, Value, Batches<B>) {
    let tol = tolerance(precision);
    let check = |got: &[f32], expected: &[f32], what: &str| check(got, expected, what, tol);
    let fixture = read_fixture();
    let case = &fixture["cases"][name];
    let cfg = &case["settings"];
    let device = device.clone();
    let tokenizer = ClipTokenizer::embedded();

    let clip = Clip::<B>::load(
        &fixtures().join(fixture["model"].as_str().unwrap()),
        &LoadOptions::default(),
        &device,
    )
    .unwrap()
    .with_precision(precision);

    let groups: Vec<Vec<String>> = cfg["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let classes_all = strings(&cfg["classes_all"]);
    let n_train = cfg["n_train"].as_u64().unwrap() as usize;
    let f = |k: &str| cfg[k].as_f64().unwrap() as f32;
    let router = cfg["router"].as_bool().unwrap();
    let mixture = MixtureConfig {
        experts: groups
            .iter()
            .map(|g| ExpertInit::Template {
                template: g[0].clone(),
            })
            .collect(),
        top_k: cfg["top_k"].as_u64().unwrap() as usize,
        router,
        text_bias: cfg["text_bias"].as_bool().unwrap(),
        renormalize: false,
        seed: 0,
        layout: Default::default(),
    };
    let loss = LossConfig {
        lambda_text: f("lambda_text"),
        lambda_gate: f("lambda_gate"),
        lambda_lb: f("lambda_lb"),
        lambda_kd: f("lambda_kd"),
        text_tau: f("tau"),
        text_classes: TextClasses::All,
        text_target: match cfg["text_target"].as_str() {
            Some("templates") => TextTarget::Templates,
            _ => TextTarget::GroupPrototypes,
        },
        gate_prototypes: GatePrototypes::PerClass,
        gate_target: GateTarget::TopKUniform,
        gate_target_detached: true,
        text_routed_only: false,
        hand_made: cfg["hand_made"].as_str().map(str::to_string),
        lambda_kg: cfg["lambda_kg"].as_f64().unwrap_or(0.0) as f32,
        kg_distance: KgDistance::Cosine,
        prograd: cfg["prograd_lambda"].as_f64().map(|lambda| ProGradConfig {
            lambda: lambda as f32,
            temperature: f("prograd_temperature"),
            scope: ProjectionScope::PerParameter,
        }),
    };
    let classes = ClassSetup {
        train: classes_all[..n_train].to_vec(),
        reference: classes_all.clone(),
        train_in_reference: (0..n_train).collect(),
    };
    let ln_tuning = cfg["ln_tuning"].as_bool().unwrap();
    let mut model = MocoopModel::new(
        clip, tokenizer, mixture, &groups, &classes, loss, ln_tuning, 0.0, &device,
    )
    .unwrap();
    model.settings.clip_norm = cfg["clip_norm"].as_f64().map(|c| c as f32);
    model.settings.ln_lr_scale = cfg["ln_lr_scale"].as_f64().unwrap();
    if precision.needs_loss_scaling() {
        model.state.loss_scale = Some(IN_RANGE);
    }

    // The contexts start from the templates' token embeddings, as in the reference.
    let mut saved: BTreeMap<String, TensorData> = BTreeMap::new();
    for (key, value) in case["ctx_init"].as_object().unwrap() {
        let g: usize = key.strip_prefix("ctx.").unwrap().parse().unwrap();
        let ours = values(model.mixture.pool.ctx[g].as_ref().unwrap().val());
        check(&ours, &flat(value), &format!("{name}: initial {key}"));
        saved.insert(key.clone(), TensorData::new(flat(value), shape(value)));
    }
    for (key, value) in case["init"].as_object().unwrap() {
        saved.insert(key.clone(), TensorData::new(flat(value), shape(value)));
    }
    model.mixture = model
        .mixture
        .clone()
        .load_tensors(&mut saved, &device)
        .unwrap();
    assert!(saved.is_empty());

    (model, case.clone(), fixture_batch(&fixture, &device))
}

/// The fixture's pixels as preprocessed here (their sum checked against the reference's) and its
/// labels: the batch of every case.
pub(crate) fn fixture_batch<B: AutodiffBackend>(fixture: &Value, device: &B::Device) -> Batches<B> {
    let device = device.clone();
    let size = 32;
    let pixels: Vec<Vec<f32>> = strings(&fixture["images"])
        .iter()
        .map(|n| preprocess(&load_rgb(&fixtures().join("images").join(n)).unwrap(), size))
        .collect();
    let sum: f64 = pixels.iter().flatten().map(|&v| f64::from(v)).sum();
    let expected_sum = fixture["pixels_sum"].as_f64().unwrap();
    assert!(
        (sum - expected_sum).abs() < 1e-2,
        "pixel sum {sum} vs {expected_sum}"
    );
    let labels: Vec<i64> = fixture["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let n = labels.len();
    let batch = move || ImageBatch {
        images: batch_tensor::<B>(&pixels, size as usize, &device),
        labels: Tensor::<B, 1, Int>::from_data(TensorData::new(labels.clone(), [n]), &device),
        indices: (0..n).collect(),
        share: 1.0,
    };
    Box::new(batch)
}

/// Runs fixture case `name` on `device` at `precision` and asserts that the forward pass, the
/// gradients and two SGD steps agree with the reference to `tolerance(precision)`.
pub fn run_case<B: AutodiffBackend>(name: &str, precision: Precision, device: &B::Device) {
    let tol = tolerance(precision);
    let check = |got: &[f32], expected: &[f32], what: &str| check(got, expected, what, tol);
    let (mut model, case, batch) = setup::<B>(name, precision, device);
    let case = &case;
    let cfg = &case["settings"];
    let f = |k: &str| cfg[k].as_f64().unwrap() as f32;
    let router = cfg["router"].as_bool().unwrap();
    let ln_tuning = cfg["ln_tuning"].as_bool().unwrap();
    // Gradients come out of a step multiplied by the loss scale (the update divides it out).
    let grad_scale = model.state.loss_scale.map_or(1.0, |s| s.scale);

    // Forward: logits, router, gates and every loss term.
    let b = batch();
    let terms = model.forward(b.images, b.labels, None, true);
    check(
        &values(terms.logits.clone()),
        &flat(&case["logits"]),
        &format!("{name}: logits"),
    );
    check(
        &values(terms.gates.clone()),
        &flat(&case["gates"]),
        &format!("{name}: gates"),
    );
    if router {
        let r = terms.router_logits.clone().unwrap();
        check(
            &values(r),
            &flat(&case["router_logits"]),
            &format!("{name}: router logits"),
        );
    }
    check_terms(&terms, &case["terms"], name, check);

    // Gradients.
    let (_, grads) = model.train_step(batch());
    let grads = grads.expect("finite loss");
    let expected_grads = case["grads"].as_object().unwrap();
    let params = named_params(&model);
    assert_eq!(
        params.len(),
        expected_grads.len(),
        "{name}: trainable parameters"
    );
    let mut squares = 0f32;
    for (pname, id, _, transpose) in &params {
        let rank = shape(&expected_grads[pname]).len();
        let g: Vec<f32> = grad_values::<B>(&grads, *id, rank, *transpose)
            .iter()
            .map(|v| v / grad_scale)
            .collect();
        squares += g.iter().map(|v| v * v).sum::<f32>();
        check(
            &g,
            &flat(&expected_grads[pname]),
            &format!("{name}: grad {pname}"),
        );
    }
    check(
        &[squares.sqrt()],
        &[case["grad_norm"].as_f64().unwrap() as f32],
        &format!("{name}: grad norm"),
    );
    // No frozen CLIP weight gets a gradient.
    let b = batch();
    let loss = model.forward(b.images, b.labels, None, true).loss;
    let frozen = GradientsParams::from_grads(loss.backward(), &model.clip);
    let ln_count = visual_ln_params(&model.clip).len();
    assert_eq!(ln_count, 8);
    assert_eq!(
        frozen.len(),
        if ln_tuning { ln_count } else { 0 },
        "{name}: CLIP gradients"
    );

    // Two optimiser steps: SGD (momentum 0.9 without dampening, weight decay), global-norm
    // clipping, LayerNorms at 0.1x lr.
    let mut optim = reference_sgd(f("weight_decay")).init::<B, MocoopModel<B>>();
    let lr = cfg["lr"].as_f64().unwrap();
    let initial = named_params(&model);
    model = model.apply_grads(&mut optim, lr, grads);
    let (_, grads) = model.train_step(batch());
    model = model.apply_grads(&mut optim, lr, grads.unwrap());
    let after = case["after_2_steps"].as_object().unwrap();
    assert!(
        trainable_dtypes(&model).iter().all(|d| *d == DType::F32),
        "{name}: trainable tensors must stay f32"
    );
    for ((pname, _, value, _), (_, _, start, _)) in named_params(&model).into_iter().zip(initial) {
        // At half-precision tolerances an unchanged tensor could pass for an updated one.
        assert_ne!(value, start, "{name}: {pname} was not updated");
        check(
            &value,
            &flat(&after[&pname]),
            &format!("{name}: {pname} after two steps"),
        );
    }
}
