//! The deep-prompt cases of the training-step fixture (`cases.maple`, `cases.ivlp`, `cases.vpt` of
//! `tests/fixtures/train_step.json`, written from multimodal-prompt-learning's trainers and the
//! prompt blocks of its `clip/model.py`; `cases.promptsrc` from PromptSRC's trainer): logits, every
//! loss term, the gradient of every learned tensor, and the tensors after two SGD steps, checked
//! on any autodiff backend.

use std::collections::BTreeMap;

use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;

use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_model::{Clip, Precision};
use mocoop_train::config::{DeepPromptConfig, LossConfig, Method, SelfRegulation, TrainConfig};
use mocoop_train::methods::deep::DeepModel;
use mocoop_train::{ClassSetup, LearnerSetup, PromptLearner};

use crate::cocoop_step::{check_after_two_steps, check_grads, ours, tensors};
use crate::train_step::{
    IN_RANGE, check, check_terms, fixture_batch, fixture_config, flat, read_fixture, strings,
    tolerance, values,
};

/// The run configuration of a case: the fixture's method with its tokens and depths.
fn config(method: Method, cfg: &Value) -> TrainConfig {
    let count = |key: &str| cfg[key].as_u64().unwrap() as usize;
    let unused = MixtureConfig::coop(
        ExpertInit::Template {
            template: "a photo of a {}.".into(),
        },
        0,
    );
    let mut config = fixture_config(method, unused, LossConfig::coop(), false);
    config.deep = Some(DeepPromptConfig {
        text_ctx: count("text_ctx"),
        text_depth: count("text_depth"),
        vision_ctx: count("vision_ctx"),
        vision_depth: count("vision_depth"),
        coupled: cfg["coupled"].as_bool().unwrap(),
        ctx_init: cfg["ctx_init"].as_str().unwrap().into(),
        self_regulation: (method == Method::Promptsrc).then(|| SelfRegulation {
            text_weight: cfg["text_weight"].as_f64().unwrap() as f32,
            image_weight: cfg["image_weight"].as_f64().unwrap() as f32,
            ..SelfRegulation::official()
        }),
    });
    config
}

/// Runs case `name` (`maple`, `ivlp`, `vpt` or `promptsrc`) on `device` with the encoders in `precision`
/// against the f32 reference: to 1e-4 in f32, within the type's rounding in f16 (at a loss scale
/// the fixture's gradients fit) and bf16.
pub fn run_deep_case<B: AutodiffBackend>(
    name: &str,
    method: Method,
    precision: Precision,
    device: &B::Device,
) {
    let tol = tolerance(precision);
    let check = |got: &[f32], expected: &[f32], what: &str| check(got, expected, what, tol);
    let fixture = read_fixture();
    let case = &fixture["cases"][name];
    let cfg = &case["settings"];
    let mut config = config(method, cfg);
    config.precision = precision;
    let clip = Clip::<B>::load(&config.weights, &LoadOptions::default(), device)
        .unwrap()
        .with_precision(precision);
    let groups = TemplateGroups::new("test", vec![vec!["a photo of a {}.".into()]]).unwrap();
    let model = DeepModel::build(LearnerSetup {
        config: &config,
        clip,
        tokenizer: ClipTokenizer::embedded(),
        groups: &groups,
        classes: ClassSetup::all(strings(&cfg["classes_all"])),
        encode_all_experts: false,
        device,
    })
    .unwrap();
    // The language context starts from the first words of "a photo of a", as in the reference;
    // the deep tokens and couplings from the reference's draws.
    let mut saved: BTreeMap<String, TensorData> = case["init"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), ours(name, value)))
        .collect();
    if let Some(ctx) = case["ctx_init"].get("ctx.0") {
        let what = format!("{name}: initial ctx.0");
        check(&tensors::<B, _>(&model)["ctx.0"], &flat(ctx), &what);
        saved.insert("ctx.0".into(), ours("ctx.0", ctx));
    }
    // PromptSRC's aggregate starts empty, as built.
    saved.extend(
        PromptLearner::tensors(&model)
            .into_iter()
            .filter(|(name, _)| name.starts_with("gpa.")),
    );
    let mut model = model.load_tensors(&mut saved, device).unwrap();
    if precision.needs_loss_scaling() {
        model.state.loss_scale = Some(IN_RANGE);
    }
    assert!(
        saved.is_empty(),
        "{name}: tensors left over {:?}",
        saved.keys()
    );

    let batch = fixture_batch::<B>(&fixture, device);
    let b = batch();
    let terms = model.forward(b.images, b.labels);
    check(
        &values(terms.logits.clone()),
        &flat(&case["logits"]),
        &format!("{name}: logits"),
    );
    check_terms(&terms, &case["terms"], name, check);

    let (_, grads) = model.train_step(batch());
    let grads = grads.expect("a finite loss");
    let grad_scale = model.state.loss_scale.map_or(1.0, |s| s.scale);
    check_grads::<B, _>(&model, &grads, &case["grads"], name, grad_scale, tol);

    check_after_two_steps(model, grads, &batch, cfg, case, name, tol);
}
