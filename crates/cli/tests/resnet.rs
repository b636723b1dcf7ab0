//! Prompt learning on a ResNet CLIP: zero-shot, CoOp and MoCoOp train and evaluate through the
//! `mocoop` binary on the fixtures' ModifiedResNet (an open_clip hub folder), and LayerNorm
//! tuning, which has nothing to tune there, is a clear error.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The fixtures' ModifiedResNet hub folder.
fn resnet_weights() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/resnet_hub")
        .display()
        .to_string()
}

/// `mocoop train` on the ResNet with `extra` flags, into `out`.
fn train(root: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let weights = resnet_weights();
    let mut args = train_args(root, out.to_str().unwrap(), extra);
    let at = args.iter().position(|a| *a == "--weights").unwrap() + 1;
    args[at] = &weights;
    mocoop(&args)
}

#[test]
fn zero_shot_coop_and_mocoop_train_and_evaluate_on_a_resnet() {
    let dir = scratch("resnet");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let short = [
        "--setting",
        "fewshot",
        "--epochs",
        "2",
        "--warmup-epochs",
        "0",
    ];

    let zero_shot = dir.join("zero-shot");
    let out = ok(train(
        root_s,
        &zero_shot,
        &["--method", "zero-shot", "--setting", "fewshot"],
    ));
    evaluates_identically(&zero_shot, &out);

    let coop = dir.join("coop");
    let out = ok(train(
        root_s,
        &coop,
        &[&["--method", "coop"][..], &short].concat(),
    ));
    let epochs = metrics(&coop);
    assert_eq!(epochs.len(), 2);
    assert!(epochs[1]["means"]["loss"].as_f64().unwrap().is_finite());
    evaluates_identically(&coop, &out);

    // MoCoOp's recipe tunes the image LayerNorms, which a ResNet does not have.
    let refused = dir.join("mocoop-ln");
    let err = failure(train(root_s, &refused, &short));
    assert!(
        err.contains("a ResNet image tower has none: pass --ln-tuning false"),
        "{err}"
    );
    assert!(!refused.join("config.json").exists(), "nothing is written");
    let mocoop_run = dir.join("mocoop");
    let flags = [&["--ln-tuning", "false"][..], &short].concat();
    let out = ok(train(root_s, &mocoop_run, &flags));
    assert_eq!(metrics(&mocoop_run).len(), 2);
    evaluates_identically(&mocoop_run, &out);
}
