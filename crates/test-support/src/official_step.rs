//! The official MoCoOp code's training step (`tests/fixtures/official_step.json`, written by
//! `tests/fixtures/make_official.py` from the dyabel/mocoop and Dassl.pytorch checkouts) and the
//! check of one `--recipe official` step against it, generic over the autodiff backend.
//!
//! The run is configured as `mocoop train --recipe official` configures it: the recipe's
//! behaviours ([`Recipe::named`]), its schedule's first learning rate, and the fixture's dataset
//! configuration (templates, groups, class lists, batch size). The check covers the initial
//! contexts (the word-counted layout), logits, router logits, gates, every loss term, every
//! gradient before clipping and their global norm, the update direction of the first SGD step
//! (clipped gradient plus weight decay, the momentum buffer PyTorch keeps) and the parameters
//! after the step at the warm-up rate of every parameter group.

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use serde_json::Value;

use mocoop_model::Clip;
use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_train::config::Method;
use mocoop_train::recipe::{Recipe, RecipeName};
use mocoop_train::{ClassSetup, MocoopModel, epoch_lr};

use crate::reference::fixtures;
use crate::train_step::{
    check, check_terms, fixture_batch, flat, named_params, reference_sgd, shape, strings, values,
};

/// Agreement asked of every value, relative to the largest reference magnitude (at least 1).
const TOLERANCE: f32 = 1e-4;

fn read_fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("official_step.json"))
        .expect("tests/fixtures/official_step.json: run tests/fixtures/make_official.py");
    serde_json::from_str(&text).unwrap()
}

/// The official configuration's template groups: its `PROMPTS` cut by `GROUPS`.
fn groups(settings: &Value) -> Vec<Vec<String>> {
    let prompts = strings(&settings["prompts"]);
    let mut start = 0;
    settings["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|size| {
            let size = size.as_u64().unwrap() as usize;
            start += size;
            prompts[start - size..start].to_vec()
        })
        .collect()
}

/// The `--recipe official` model of fixture case `name`, with the official code's initial
/// router and text bias (its contexts are checked against the official ones, not loaded), and
/// the case.
fn setup<B: AutodiffBackend>(name: &str, device: &B::Device) -> (MocoopModel<B>, Recipe, Value) {
    let fixture = read_fixture();
    let case = fixture["cases"][name].clone();
    let settings = &case["settings"];
    let config = settings["dataset_config"].as_str().unwrap();
    let dataset = std::path::Path::new(config)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap();
    let recipe = Recipe::named(RecipeName::Official, Method::Mocoop, dataset).unwrap();
    let batch = case["labels"].as_array().unwrap().len();
    let clip = Clip::<B>::load(
        &fixtures().join(fixture["model"].as_str().unwrap()),
        &LoadOptions::default(),
        device,
    )
    .unwrap();
    let groups = groups(settings);
    let mixture = MixtureConfig {
        experts: groups
            .iter()
            .map(|g| ExpertInit::Template {
                template: g[0].clone(),
            })
            .collect(),
        top_k: 2,
        router: true,
        text_bias: true,
        renormalize: false,
        seed: 0,
        layout: recipe.official.layout,
    };
    let mut loss = recipe.loss.clone();
    loss.text_routed_only = batch < recipe.official.routed_text_below_batch;
    let classes_all = strings(&settings["classes_all"]);
    let n_train = settings["n_train"].as_u64().unwrap() as usize;
    let classes = ClassSetup {
        train: classes_all[..n_train].to_vec(),
        reference: classes_all.clone(),
        train_in_reference: (0..n_train).collect(),
    };
    let tokenizer = ClipTokenizer::embedded();
    let mut model = MocoopModel::new(
        clip, tokenizer, mixture, &groups, &classes, loss, true, 0.0, device,
    )
    .unwrap();
    let optim = recipe.optim(batch, recipe.epochs);
    model.settings.clip_norm = optim.clip_norm;
    model.settings.ln_lr_scale = optim.ln_lr_scale;
    model.settings.warmup_lr_all_groups = optim.warmup_all_groups.then_some(optim.warmup_lr);

    let mut saved: BTreeMap<String, TensorData> = BTreeMap::new();
    for (key, value) in case["ctx_init"].as_object().unwrap() {
        let g: usize = key.strip_prefix("ctx.").unwrap().parse().unwrap();
        let ours = values(model.mixture.pool.ctx[g].as_ref().unwrap().val());
        check(
            &ours,
            &flat(value),
            &format!("{name}: initial {key}"),
            TOLERANCE,
        );
        saved.insert(key.clone(), TensorData::new(flat(value), shape(value)));
    }
    for (key, value) in case["init"].as_object().unwrap() {
        saved.insert(key.clone(), TensorData::new(flat(value), shape(value)));
    }
    model.mixture = model
        .mixture
        .clone()
        .load_tensors(&mut saved, device)
        .unwrap();
    (model, recipe, case)
}

/// Checks the forward pass of case `name` against the official step: logits, router logits,
/// gates and every loss term.
fn check_forward<B: AutodiffBackend>(name: &str, model: &MocoopModel<B>, case: &Value) {
    let device = model.prompts.fixed.device();
    let b = fixture_batch::<B>(case, &device)();
    let terms = model.forward(b.images, b.labels, None, true);
    let pairs = [
        ("logits", values(terms.logits.clone())),
        (
            "router_logits",
            values(terms.router_logits.clone().unwrap()),
        ),
        ("gates", values(terms.gates.clone())),
    ];
    for (key, got) in pairs {
        check(
            &got,
            &flat(&case[key]),
            &format!("{name}: {key}"),
            TOLERANCE,
        );
    }
    let within = |got: &[f32], want: &[f32], what: &str| check(got, want, what, TOLERANCE);
    check_terms(&terms, &case["terms"], name, within);
}

/// A gradient's values, `[E, D]` for the router as PyTorch lays it out; `None` when the
/// parameter got none.
fn gradient<B: AutodiffBackend>(
    grads: &GradientsParams,
    id: burn::module::ParamId,
    rank: usize,
    transpose: bool,
) -> Option<Vec<f32>> {
    if rank == 1 {
        return grads
            .get::<B::InnerBackend, 1>(id)
            .map(values::<B::InnerBackend, 1>);
    }
    let g = grads.get::<B::InnerBackend, 2>(id)?;
    Some(values(if transpose { g.transpose() } else { g }))
}

/// Runs fixture case `name` on `device`: the forward pass, the gradients, the update direction
/// and one step at the recipe's first learning rate, each against the official code's to 1e-4.
pub fn run_official_case<B: AutodiffBackend>(name: &str, device: &B::Device) {
    let (model, recipe, case) = setup::<B>(name, device);
    check_forward(name, &model, &case);
    let batch = fixture_batch::<B>(&case, device);
    let (_, grads) = model.train_step(batch());
    let grads = grads.expect("a finite loss");
    check_gradients(name, &model, &grads, &case);

    // The schedule's first rate is the warm-up rate for every group, as Dassl's.
    let optim = recipe.optim(case["labels"].as_array().unwrap().len(), recipe.epochs);
    let lr = epoch_lr(&optim, 0);
    let settings = &case["settings"];
    for group in ["prompts", "ln"] {
        let want = settings["lr"][group].as_f64().unwrap();
        assert!(
            (lr - want).abs() < 1e-12,
            "{name}: lr of {group}: {lr} vs {want}"
        );
    }
    let weight_decay = settings["weight_decay"].as_f64().unwrap() as f32;
    check_update(name, &model, batch.as_ref(), weight_decay, &case);

    // The step itself, at the warm-up rate.
    let mut sgd = reference_sgd(weight_decay).init::<B, MocoopModel<B>>();
    let model = model.apply_grads(&mut sgd, lr, grads);
    let after = case["after"].as_object().unwrap();
    for (pname, _, value, _) in named_params(&model) {
        let what = format!("{name}: {pname} after the step");
        check(&value, &flat(&after[&pname]), &what, TOLERANCE);
    }
}

/// Every gradient before clipping and their global norm. An expert no image is routed to has
/// none in the official step below batch size 4 (its context is not encoded), and none here.
fn check_gradients<B: AutodiffBackend>(
    name: &str,
    model: &MocoopModel<B>,
    grads: &GradientsParams,
    case: &Value,
) {
    let expected = case["grads"].as_object().unwrap();
    let mut squares = 0f32;
    for (pname, id, _, transpose) in named_params(model) {
        let rank = if pname.starts_with("ctx.") || pname == "router.weight" {
            2
        } else {
            1
        };
        let got = gradient::<B>(grads, id, rank, transpose);
        match (expected.get(&pname), got) {
            (Some(want), Some(got)) => {
                squares += got.iter().map(|v| v * v).sum::<f32>();
                check(
                    &got,
                    &flat(want),
                    &format!("{name}: grad {pname}"),
                    TOLERANCE,
                );
            }
            (Some(_), None) => panic!("{name}: {pname} has no gradient"),
            (None, got) => assert!(got.is_none(), "{name}: {pname} has a gradient"),
        }
    }
    let norm = case["grad_norm"].as_f64().unwrap() as f32;
    check(
        &[squares.sqrt()],
        &[norm],
        &format!("{name}: grad norm"),
        TOLERANCE,
    );
}

/// The first SGD step's update direction (clipped gradient plus weight decay): one step at
/// learning rate 1 for every group, so that the change is the direction itself, free of the
/// cancellation a 1e-5 step would suffer. Tensors the official step has no gradient for are
/// left alone by PyTorch's SGD (no weight decay, no momentum), so they must not move at all.
fn check_update<B: AutodiffBackend>(
    name: &str,
    model: &MocoopModel<B>,
    batch: &dyn Fn() -> mocoop_data::ImageBatch<B>,
    weight_decay: f32,
    case: &Value,
) {
    let mut unit = model.clone();
    unit.settings.warmup_lr_all_groups = Some(1.0);
    let before = named_params(&unit);
    let mut sgd = reference_sgd(weight_decay).init::<B, MocoopModel<B>>();
    let (_, grads) = unit.train_step(batch());
    let unit = unit.apply_grads(&mut sgd, 1.0, grads.unwrap());
    let updates = case["update"].as_object().unwrap();
    for ((pname, _, start, _), (_, _, end, _)) in before.iter().zip(named_params(&unit)) {
        let got: Vec<f32> = start.iter().zip(&end).map(|(a, b)| a - b).collect();
        match updates.get(pname) {
            Some(want) => check(
                &got,
                &flat(want),
                &format!("{name}: update of {pname}"),
                TOLERANCE,
            ),
            None => assert!(start == &end, "{name}: {pname} moved without a gradient"),
        }
    }
}
