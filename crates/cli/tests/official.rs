//! `mocoop train --recipe official` end to end on the miniature DTD-layout dataset of the other
//! CLI tests: the official MoCoOp code's behaviours (word-counted contexts, classification
//! prompts without their final period beside the text-level loss's with it, the softmax gating
//! target with its gradient, the warm-up rate for every group) train, are recorded in
//! `config.json`, and the reloaded run evaluates as the trained one did; a run trained on an
//! ImageNet-layout miniature and evaluated on a domain-shift target is loaded as the official
//! code loads it, with a warning.

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

/// ImageNet's first classes (`classnames.txt`'s WordNet ids and names).
const IMAGENET_CLASSES: [(&str, &str, [u8; 3]); 3] = [
    ("n01440764", "tench", [220, 30, 30]),
    ("n01443537", "goldfish", [230, 220, 40]),
    ("n01484850", "great white shark", [60, 150, 220]),
];

/// `dir/classnames.txt` and `n` images per class in `dir/images/<sub>/<wnid>/`.
fn imagenet_layout(dir: &std::path::Path, sub: &str, n: usize, seed: usize) {
    let names: String = IMAGENET_CLASSES
        .iter()
        .map(|(wnid, name, _)| format!("{wnid} {name}\n"))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("classnames.txt"), names).unwrap();
    for (c, (wnid, _, colour)) in IMAGENET_CLASSES.iter().enumerate() {
        let folder = dir.join("images").join(sub).join(wnid);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..n {
            let seed = (seed + c * 100 + i) as u32;
            write_bmp(&folder.join(format!("{i}.bmp")), 40, *colour, seed);
        }
    }
}

/// The domain-shift targets have 16 template groups in the official configurations, where the
/// run trained on ImageNet has 20 experts: evaluated there, the run is loaded as the official
/// code's `load_model` loads it (the tensors whose shapes differ, the router among them, keep a
/// fresh initialisation), and `eval` says so on stderr; on ImageNet itself it is loaded as trained.
#[test]
fn an_official_imagenet_run_evaluated_on_a_domain_target_warns_how_it_was_loaded() {
    let dir = scratch("official-domain-target");
    let root = dir.join("data");
    imagenet_layout(&root.join("imagenet"), "train", 4, 0);
    imagenet_layout(&root.join("imagenet"), "val", 2, 50);
    imagenet_layout(&root.join("imagenet-sketch"), "", 2, 70);
    let run = dir.join("run");
    let (root_s, run_s) = (root.to_str().unwrap(), run.to_str().unwrap());
    let mut args = train_args(
        root_s,
        run_s,
        &[
            "--recipe",
            "official",
            "--epochs",
            "1",
            "--setting",
            "fewshot",
        ],
    );
    let dataset = args.iter().position(|a| *a == "dtd").unwrap();
    args[dataset] = "imagenet";
    let shots = args.iter().position(|a| *a == "--shots").unwrap();
    args[shots + 1] = "4";
    let batch = args.iter().position(|a| *a == "--batch-size").unwrap();
    args[batch + 1] = "2";
    let trained = ok(mocoop(&args));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["loss"]["text_routed_only"], true,
        "batch 2 is below 4"
    );

    let own = mocoop(&["eval", "--run", run_s, "--workers", "1"]);
    let own_stderr = String::from_utf8_lossy(&own.stderr).to_string();
    let own = ok(own);
    assert!(
        !own_stderr.contains("under the official recipe"),
        "{own_stderr}"
    );
    assert_eq!(
        split(&own, "all")["correct"],
        split(&trained["results"], "all")["correct"]
    );

    let target = [
        "eval",
        "--run",
        run_s,
        "--dataset",
        "imagenet_sketch",
        "--root",
        root_s,
        "--workers",
        "1",
    ];
    let shifted = mocoop(&target);
    let stderr = String::from_utf8_lossy(&shifted.stderr).to_string();
    let shifted = ok(shifted);
    assert!(
        stderr.contains(
            "under the official recipe imagenet_sketch has 16 template groups and the run 20"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("routing on imagenet_sketch is random"),
        "{stderr}"
    );
    let all = split(&shifted, "all");
    assert_eq!(
        (all["images"].as_u64(), all["classes"].as_u64()),
        (Some(6), Some(3)),
        "{shifted}"
    );
}
