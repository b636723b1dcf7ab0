//! The method interface's contract (`PromptLearner`, `TrainedLearner`), checked on the models of
//! the registered training methods (MoCoOp, CoOp; with and without LayerNorm tuning): what trains
//! is what a checkpoint holds and what the optimiser state is re-keyed by; a checkpoint's tensors
//! load back into a fresh model and a missing one is refused; every logged loss term is in the
//! step's values; the inference form holds the same tensors and classifies as the training form.

use std::collections::{BTreeMap, BTreeSet};

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burn::train::TrainStep;

use mocoop_data::ImageBatch;
use mocoop_model::Clip;
use mocoop_model::prompt::{ExpertInit, MixtureConfig};
use mocoop_model::templates::TemplateGroups;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_model::weights::LoadOptions;
use mocoop_test_support::train_step::fixture_config;
use mocoop_train::config::{LossConfig, Method, TrainConfig};
use mocoop_train::{ClassSetup, LearnerSetup, MocoopModel, PromptLearner};

type B = Autodiff<Flex>;

fn groups() -> TemplateGroups {
    TemplateGroups::new(
        "test",
        vec![
            vec!["a photo of a {}.".into(), "a sketch of a {}.".into()],
            vec!["a {} under a yellow lamp.".into()],
            vec!["a small {}.".into()],
        ],
    )
    .unwrap()
}

fn classes() -> ClassSetup {
    ClassSetup::all(vec!["cat".into(), "dog".into(), "red square".into()])
}

/// A run's configuration for `method` (MoCoOp: three experts, top 2).
fn config(method: Method, ln_tuning: bool) -> TrainConfig {
    let (mixture, loss) = match method {
        Method::Coop => (
            MixtureConfig::coop(
                ExpertInit::Template {
                    template: "a photo of a {}.".into(),
                },
                1,
            ),
            LossConfig::coop(),
        ),
        _ => (MixtureConfig::mocoop(&groups(), 2, 1), LossConfig::mocoop()),
    };
    fixture_config(method, mixture, loss, ln_tuning)
}

/// The model of `config` through the interface.
fn build(config: &TrainConfig) -> MocoopModel<B> {
    let device = Default::default();
    let clip = Clip::<B>::load(&config.weights, &LoadOptions::default(), &device).unwrap();
    MocoopModel::build(LearnerSetup {
        config,
        clip,
        tokenizer: ClipTokenizer::embedded(),
        groups: &groups(),
        classes: classes(),
        encode_all_experts: false,
        device: &device,
    })
    .unwrap()
}

fn batch() -> ImageBatch<B> {
    let device = Default::default();
    ImageBatch {
        images: Tensor::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device),
        labels: Tensor::<B, 1, Int>::from_ints([0, 1, 2, 1], &device),
        indices: (0..4).collect(),
        share: 1.0,
    }
}

/// Every configuration the registered training methods run with.
fn configs() -> Vec<TrainConfig> {
    let mut out = Vec::new();
    for method in [Method::Mocoop, Method::Coop] {
        for ln_tuning in [false, true] {
            out.push(config(method, ln_tuning));
        }
    }
    out
}

fn names<T>(items: &[(String, T)]) -> Vec<&str> {
    items.iter().map(|(name, _)| name.as_str()).collect()
}

fn floats(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn what_trains_is_what_is_saved_and_rekeyed() {
    let _serial = mocoop_test_support::serial_autodiff();
    for config in configs() {
        let model = build(&config);
        let tensors = model.tensors();
        let ids = model.param_ids();
        assert_eq!(names(&tensors), names(&ids), "{:?}", config.method);
        let unique: BTreeSet<_> = ids.iter().map(|(_, id)| *id).collect();
        assert_eq!(unique.len(), ids.len());
        let lns = tensors
            .iter()
            .filter(|(n, _)| n.starts_with("visual."))
            .count();
        assert_eq!(lns > 0, config.ln_tuning, "{:?}", names(&tensors));
        // Each named id is a parameter of the model: a step's gradients reach it.
        let grads = TrainStep::step(&model, batch()).grads;
        for (name, id) in &ids {
            let has = grads.get::<Flex, 1>(*id).is_some() || grads.get::<Flex, 2>(*id).is_some();
            assert!(has, "no gradient for '{name}'");
        }
    }
}

#[test]
fn saved_tensors_load_into_a_fresh_model_and_a_missing_one_is_refused() {
    let _serial = mocoop_test_support::serial_autodiff();
    for config in configs() {
        let model = build(&config);
        let device = Default::default();
        // Move every tensor away from its initial value so that the fresh model differs.
        let mut saved: BTreeMap<String, TensorData> = model
            .tensors()
            .into_iter()
            .map(|(name, data)| {
                let moved: Vec<f32> = floats(&data).iter().map(|v| v + 0.25).collect();
                (name, TensorData::new(moved, data.shape.clone()))
            })
            .collect();
        let expected = saved.clone();
        let loaded = build(&config).load_tensors(&mut saved, &device).unwrap();
        assert!(saved.is_empty(), "left over: {:?}", saved.keys());
        for (name, data) in loaded.tensors() {
            assert_eq!(floats(&data), floats(&expected[&name]), "{name}");
        }
        let mut short = expected.clone();
        let (first, _) = short.pop_first().unwrap();
        let err = build(&config)
            .load_tensors(&mut short, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&first) || err.contains("experts"), "{err}");
    }
}

#[test]
fn every_logged_term_is_in_the_steps_values() {
    let _serial = mocoop_test_support::serial_autodiff();
    for config in configs() {
        let model = build(&config);
        let output = TrainStep::step(&model, batch()).item;
        let keys: Vec<&str> = model.loss_terms().iter().map(|t| t.key).collect();
        for key in ["loss", "ce", "accuracy"].iter().chain(&keys) {
            assert!(output.value(key).is_some(), "{key} missing from {output:?}");
        }
        let routed = config.method == Method::Mocoop;
        assert_eq!(model.routed_experts(), routed.then_some(3));
        assert_eq!(output.value("router_entropy").is_some(), routed);
        assert_eq!(output.loads.len(), if routed { 3 } else { 0 });
        if routed {
            assert!(keys.contains(&"text") && keys.contains(&"gate"), "{keys:?}");
        }
    }
}

#[test]
fn the_trained_form_holds_the_same_tensors_and_logits() {
    let _serial = mocoop_test_support::serial_autodiff();
    for config in configs() {
        let model = build(&config).valid();
        let expected = PromptLearner::<B>::tensors(&build(&config));
        let trained = MocoopModel::<B>::into_trained(model.clone());
        assert_eq!(names(&trained.tensors()), names(&expected));
        let device = Default::default();
        let names: Vec<String> = classes().train;
        let classifier = trained
            .classifier(ClipTokenizer::embedded(), &names, "test", &device)
            .unwrap();
        let batch = batch();
        let images = batch.images.inner();
        let ours = classifier.predict(images.clone());
        let labels = batch.labels.inner();
        let theirs = model.forward(images, labels, None, false);
        let (a, b) = (ours.logits.into_data(), theirs.logits.into_data());
        a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-4));
        assert_eq!(ours.gates.is_some(), config.method == Method::Mocoop);
        assert_eq!(classifier.experts(), config.mixture.num_experts());
    }
}

/// A run records how its checkpoint was loaded (architecture, heads, activation) at the top level
/// of `config.json`, and a `config.json` of an older run, without those keys, still reads.
#[test]
fn run_configs_record_how_the_checkpoint_was_loaded() {
    let mut config = config(Method::Coop, false);
    config.load.arch = Some("ViT-B-16".into());
    config.load.vision_heads = Some(3);
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["arch"], "ViT-B-16");
    assert_eq!(json["vision_heads"], 3);
    let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, config);
    let mut older = json;
    for key in [
        "arch",
        "open_clip_config",
        "vision_heads",
        "text_heads",
        "activation",
    ] {
        older.as_object_mut().unwrap().remove(key);
    }
    let older: TrainConfig = serde_json::from_value(older).unwrap();
    assert_eq!(older.load, Default::default());
}
