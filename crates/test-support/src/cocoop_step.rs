//! The CoCoOp case of the training-step fixture (`cases.cocoop` of `tests/fixtures/train_step.json`,
//! written from CoOp's `trainers/cocoop.py`): logits, the cross-entropy, the gradients of the
//! context and the meta-net, and the tensors after two SGD steps, checked on any autodiff backend.

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use serde_json::Value;

use mocoop_model::Clip;
use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_train::config::{LossConfig, Method, TrainConfig};
use mocoop_train::methods::cocoop::CocoopModel;
use mocoop_train::{ClassSetup, LearnerSetup, PromptLearner};

use crate::train_step::{
    Batches, check, check_terms, fixture_batch, fixture_config, flat, read_fixture, reference_sgd,
    shape, strings, values,
};

/// A reference tensor in this project's layout: PyTorch's `[out, in]` linear weights transposed.
pub(crate) fn ours(name: &str, value: &Value) -> TensorData {
    let (data, dims) = (flat(value), shape(value));
    if name.ends_with(".weight") {
        let (rows, cols) = (dims[0], dims[1]);
        let t: Vec<f32> = (0..cols * rows)
            .map(|k| data[(k % rows) * cols + k / rows])
            .collect();
        TensorData::new(t, [cols, rows])
    } else {
        TensorData::new(data, dims)
    }
}

/// The run configuration of the case.
fn config(cfg: &Value) -> TrainConfig {
    let template = cfg["template"].as_str().unwrap().to_string();
    let mixture = MixtureConfig::coop(ExpertInit::Template { template }, 0);
    fixture_config(Method::Cocoop, mixture, LossConfig::coop(), false)
}

/// The tensors of `model` by checkpoint name, as f32.
pub(crate) fn tensors<B: AutodiffBackend, M: PromptLearner<B>>(
    model: &M,
) -> BTreeMap<String, Vec<f32>> {
    PromptLearner::tensors(model)
        .into_iter()
        .map(|(name, data)| (name, data.convert::<f32>().to_vec::<f32>().unwrap()))
        .collect()
}

/// Runs the CoCoOp case on `device` in f32 against the reference to 1e-4.
pub fn run_cocoop_case<B: AutodiffBackend>(device: &B::Device) {
    let check = |got: &[f32], expected: &[f32], what: &str| check(got, expected, what, 1e-4);
    let fixture = read_fixture();
    let case = &fixture["cases"]["cocoop"];
    let cfg = &case["settings"];
    let config = config(cfg);
    let clip = Clip::<B>::load(&config.weights, &LoadOptions::default(), device).unwrap();
    let template = cfg["template"].as_str().unwrap().to_string();
    let groups = TemplateGroups::new("test", vec![vec![template]]).unwrap();
    let model = CocoopModel::build(LearnerSetup {
        config: &config,
        clip,
        tokenizer: ClipTokenizer::embedded(),
        groups: &groups,
        classes: ClassSetup::all(strings(&cfg["classes_all"])),
        encode_all_experts: false,
        device,
    })
    .unwrap();
    // The context starts from the template's words, as in the reference; the meta-net from the
    // reference's draws.
    let ctx = &case["ctx_init"]["ctx.0"];
    check(
        &tensors::<B, _>(&model)["ctx.0"],
        &flat(ctx),
        "cocoop: initial ctx.0",
    );
    let mut saved: BTreeMap<String, TensorData> = case["init"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), ours(name, value)))
        .collect();
    saved.insert("ctx.0".into(), ours("ctx.0", ctx));
    let model = model.load_tensors(&mut saved, device).unwrap();

    let batch = fixture_batch::<B>(&fixture, device);
    let b = batch();
    let f = Clip::encode_image(&model.clip, b.images);
    let terms = model.forward_features(f, b.labels);
    check(
        &values(terms.logits.clone()),
        &flat(&case["logits"]),
        "cocoop: logits",
    );
    check_terms(&terms, &case["terms"], "cocoop", check);

    let (_, grads) = model.train_step(batch());
    let grads = grads.expect("a finite loss");
    check_grads::<B, _>(&model, &grads, &case["grads"], "cocoop", 1.0, 1e-4);

    check_after_two_steps(model, grads, &batch, cfg, case, "cocoop", 1e-4);
}

/// Applies the first step's `grads` and takes a second step on `batch` with the reference SGD of
/// `cfg`, then checks every trained tensor against the case's `after_2_steps` to `tol`.
pub(crate) fn check_after_two_steps<B: AutodiffBackend, M: PromptLearner<B>>(
    model: M,
    grads: GradientsParams,
    batch: &Batches<B>,
    cfg: &Value,
    case: &Value,
    name: &str,
    tol: f32,
) {
    let weight_decay = cfg["weight_decay"].as_f64().unwrap() as f32;
    let mut optim = reference_sgd(weight_decay).init::<B, M>();
    let lr = cfg["lr"].as_f64().unwrap();
    let model = TrainStep::optimize(model, &mut optim, lr, grads);
    let second = TrainStep::step(&model, batch());
    assert!(second.item.loss_is_finite(), "{name}: second step's loss");
    let model = TrainStep::optimize(model, &mut optim, lr, second.grads);
    let after = tensors::<B, _>(&model);
    for (tensor, value) in case["after_2_steps"].as_object().unwrap() {
        let expected = ours(tensor, value).to_vec::<f32>().unwrap();
        let what = format!("{name}: {tensor} after two steps");
        check(&after[tensor], &expected, &what, tol);
    }
}

/// Every trainable tensor's gradient (divided by the loss scale `grad_scale` it was computed
/// at) against the reference's to `tolerance` (case `what`).
pub(crate) fn check_grads<B: AutodiffBackend, M: PromptLearner<B>>(
    model: &M,
    grads: &GradientsParams,
    expected: &Value,
    what: &str,
    grad_scale: f32,
    tolerance: f32,
) {
    let expected = expected.as_object().unwrap();
    let ids = model.param_ids();
    assert_eq!(ids.len(), expected.len(), "{what}: trainable tensors");
    for (name, id) in ids {
        let want = ours(&name, &expected[&name]);
        let got = if want.shape.len() == 1 {
            values(grads.get::<B::InnerBackend, 1>(id).expect("a gradient"))
        } else {
            values(grads.get::<B::InnerBackend, 2>(id).expect("a gradient"))
        };
        let got: Vec<f32> = got.iter().map(|g| g / grad_scale).collect();
        check(
            &got,
            &want.to_vec::<f32>().unwrap(),
            &format!("{what}: grad {name}"),
            tolerance,
        );
    }
}
