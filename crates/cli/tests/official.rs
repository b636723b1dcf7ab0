//! `mocoop train --recipe official` end to end on the miniature DTD-layout dataset of the other
//! CLI tests: the official MoCoOp code's behaviours (word-counted contexts, classification
//! prompts without their final period beside the text-level loss's with it, the softmax gating
//! target with its gradient, the warm-up rate for every group) train, are recorded in
//! `config.json`, and the reloaded run evaluates as the trained one did.

use serde_json::Value;

use crate::common::*;

#[test]
fn the_official_recipe_trains_records_its_behaviours_and_reloads() {
    let dir = scratch("official-recipe");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let run = dir.join("run");
    let (root_s, run_s) = (root.to_str().unwrap(), run.to_str().unwrap());
    let flags = [
        "--recipe",
        "official",
        "--setting",
        "base2new",
        "--epochs",
        "8",
    ];
    let out = ok(mocoop(&train_args(root_s, run_s, &flags)));

    let epochs = metrics(&run);
    assert_eq!(epochs.len(), 8);
    let (first, last) = (&epochs[0]["means"], &epochs[7]["means"]);
    for key in ["loss", "ce"] {
        let (a, b) = (first[key].as_f64().unwrap(), last[key].as_f64().unwrap());
        assert!(b < a, "{key}: {first} -> {last}");
    }
    assert!(last["text"].as_f64().unwrap().is_finite() && last["gate"].as_f64().is_some());
    // 8 of the recipe's 25 epochs warm up for 8 × 3 / 25 = 0, at least 1; at the official
    // 0.032, not scaled to the batch of 8.
    let lr: Vec<f64> = epochs.iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    assert_eq!(lr[0], 1e-5);
    assert!((lr[1] - 0.032).abs() < 1e-9, "{lr:?}");

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["recipe"], "official");
    assert_eq!(config["mixture"]["layout"]["context_count"], "words");
    assert_eq!(config["mixture"]["layout"]["classify_without_period"], true);
    assert_eq!(config["loss"]["gate_target"], "softmax_boost");
    assert_eq!(config["loss"]["gate_target_detached"], false);
    assert_eq!(
        config["loss"]["text_routed_only"], false,
        "batch 8 is not below 4"
    );
    assert_eq!(config["optim"]["warmup_all_groups"], true);
    assert_eq!(
        config["precision"], "f32",
        "the CPU trains in f32 under the official recipe"
    );

    // The run reloads with the same layout: the same correct counts on base and new.
    let eval = ok(mocoop(&["eval", "--run", run_s, "--workers", "1"]));
    for name in ["base", "new"] {
        let (again, before) = (split(&eval, name), split(&out["results"], name));
        assert!(before["correct"].as_u64().is_some(), "{out}");
        assert_eq!(
            again["correct"], before["correct"],
            "{name}: {eval} vs {out}"
        );
    }

    // The default stays the method description's reading.
    let clean = dir.join("clean");
    let args = ["--setting", "base2new", "--epochs", "1", "--no-eval"];
    ok(mocoop(&train_args(root_s, clean.to_str().unwrap(), &args)));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["recipe"], "default");
    assert_eq!(config["mixture"]["layout"]["context_count"], "tokens");
    assert_eq!(config["loss"]["gate_target"], "top_k_uniform");
}
