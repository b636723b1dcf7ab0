//! End-to-end prompt learning through the `mocoop` binary: a miniature dataset in CoOp's layout
//! (DTD's folder and split file) of generated images whose class is their colour, `mocoop train`
//! with the tiny random CLIP of the fixtures, then `mocoop eval` on the saved run.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

/// `value[key]` as a number; panics when the key is missing or not a number, so that comparing
/// two of them cannot pass on two missing values.
fn number(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number '{key}' in {value}"))
}

/// `value[key]`; panics when the key is missing, so that comparing two of them cannot pass on two
/// missing values (both `null`).
fn present<'a>(value: &'a Value, key: &str) -> &'a Value {
    value
        .get(key)
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| panic!("no '{key}' in {value}"))
}

/// Trains 10 few-shot epochs (1 of warm-up) with `extra` flags on a fresh miniature dataset in
/// `scratch(name)/data`, into `scratch(name)/run`; returns that folder, the run, the command's
/// output and what it printed on stderr.
fn train_ten_epochs(name: &str, extra: &[&str]) -> (PathBuf, PathBuf, Value, String) {
    let dir = scratch(name);
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let run = dir.join("run");
    let mut flags = vec![
        "--setting",
        "fewshot",
        "--epochs",
        "10",
        "--warmup-epochs",
        "1",
    ];
    flags.extend_from_slice(extra);
    let output = mocoop(&train_args(
        root.to_str().unwrap(),
        run.to_str().unwrap(),
        &flags,
    ));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (dir, run, ok(output), stderr)
}

/// `classify --prompts` with the run in `run_s` (dataset under `root`) uses the trained prompts
/// (and LayerNorms, tokens inside the encoders): the same correct count on the test images as
/// the run's evaluation `trained`.
fn classify_agrees_with_eval(dir: &Path, root: &Path, run_s: &str, trained: &Value) {
    let names = dir.join("names.txt");
    let classnames: Vec<&str> = CLASSES.iter().map(|(n, _)| *n).collect();
    std::fs::write(&names, classnames.join("\n")).unwrap();
    let classes = format!("@{}", names.display());
    let w = weights();
    let mut args = vec![
        "classify".to_string(),
        "--weights".into(),
        w.display().to_string(),
        "--prompts".into(),
        run_s.into(),
        "--classes".into(),
        classes,
        "--json".into(),
        "--top-k".into(),
        "1".into(),
    ];
    let mut truth = Vec::new();
    for (label, _) in CLASSES.iter().enumerate() {
        for i in 10..16 {
            let image = root.join(format!("dtd/images/class{label}/{i}.bmp"));
            args.push(image.display().to_string());
            truth.push(classnames[label]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = mocoop(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let predictions: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(predictions.len(), truth.len());
    let correct = predictions
        .iter()
        .zip(&truth)
        .filter(|(p, t)| p["predictions"][0]["class"] == **t)
        .count();
    assert_eq!(correct as u64, trained["correct"].as_u64().unwrap());
}

#[test]
fn mocoop_learns_and_a_reloaded_run_evaluates_identically() {
    let (dir, run, out, _) = train_ten_epochs("mocoop", &[]);
    let root = dir.join("data");
    let (root_s, run_s) = (root.to_str().unwrap(), run.to_str().unwrap());

    // Loss falls, training accuracy rises, and test accuracy is far above chance (25%).
    let epochs = metrics(&run);
    assert_eq!(epochs.len(), 10);
    let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
    assert!(
        number(last, "ce") < number(first, "ce"),
        "{first} -> {last}"
    );
    assert!(
        number(last, "loss") < number(first, "loss"),
        "{first} -> {last}"
    );
    assert!(number(last, "accuracy") > number(first, "accuracy"));
    for key in ["text", "gate", "router_entropy"] {
        assert!(last[key].as_f64().unwrap().is_finite(), "{key}");
    }
    assert_eq!(epochs[9]["expert_load"].as_array().unwrap().len(), 5); // DTD: 5 groups
    assert_eq!(epochs[0]["lr"].as_f64(), Some(1e-5)); // constant warm-up
    let results = &out["results"];
    let trained = split(results, "all");
    assert!(trained["accuracy"].as_f64().unwrap() >= 75.0, "{results}");

    // The run's report: curves of every loss term, the router's choices per class (top-K of each
    // of the 4 x 6 test images) and each expert's examples, in one page.
    let report = run.join("report");
    let read = |file: &str| std::fs::read_to_string(report.join(file)).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let top_k = config["mixture"]["top_k"].as_u64().unwrap();
    let heat_map = read("routing_by_class.svg");
    let cells: Vec<u64> = heat_map
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next()?.trim().parse().ok())
        .collect();
    assert_eq!(cells.len(), 4 * 5, "{cells:?}");
    assert_eq!(cells.iter().sum::<u64>(), 4 * 6 * top_k);
    for (class, _) in CLASSES {
        assert!(heat_map.contains(class), "{class} not on the heat map");
    }
    let curves = read("training_curves.svg");
    for panel in [
        "loss term L_text",
        "loss term L_gate",
        "training accuracy",
        "learning rate",
    ] {
        assert!(curves.contains(panel), "no {panel} panel");
    }
    let html = read("report.html");
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 3);
    assert!(read("summary.md").contains("| dtd all |"));
    assert_eq!(trained["images"], 24);

    // Only the trainable tensors are saved: kilobytes.
    let size = std::fs::metadata(run.join("checkpoint.safetensors"))
        .unwrap()
        .len();
    assert!(size < 64 * 1024, "checkpoint is {size} bytes");
    assert!(run.join("config.json").is_file() && run.join("results.json").is_file());

    // The reloaded run gives the identical result.
    let eval = ok(mocoop(&["eval", "--run", run_s, "--workers", "1"]));
    assert_eq!(
        present(split(&eval, "all"), "correct"),
        present(trained, "correct"),
        "{eval} vs {results}"
    );
    assert!(run.join("eval-dtd-all.json").is_file());

    classify_agrees_with_eval(&dir, &root, run_s, trained);

    // A run of another method is refused, both ways.
    let err = failure(mocoop(&["eval", "--run", run_s, "--method", "coop"]));
    assert!(err.contains("is a mocoop run, not a coop run"), "{err}");
    let err = failure(mocoop(&train_args(root_s, run_s, &["--method", "coop"])));
    assert!(err.contains("already holds a mocoop run"), "{err}");

    // A configuration with another number of experts does not fit the checkpoint.
    let edited = dir.join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    config["mixture"]["experts"].as_array_mut().unwrap().pop();
    std::fs::write(edited.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        run.join("checkpoint.safetensors"),
        edited.join("checkpoint.safetensors"),
    )
    .unwrap();
    let err = failure(mocoop(&["eval", "--run", edited.to_str().unwrap()]));
    assert!(err.contains("wrong number of experts"), "{err}");
}

#[test]
fn coop_and_zero_shot_base_to_new() {
    let dir = scratch("coop");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let coop = dir.join("coop");
    let out = ok(mocoop(&train_args(
        root_s,
        coop.to_str().unwrap(),
        &["--method", "coop", "--epochs", "4", "--warmup-epochs", "0"],
    )));
    let results = &out["results"];
    assert_eq!(split(results, "base")["classes"], 2);
    assert_eq!(split(results, "new")["classes"], 2);
    assert!(results["hm"].as_f64().is_some(), "{results}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(coop.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["mixture"]["experts"].as_array().unwrap().len(), 1);
    assert_eq!(config["ln_tuning"], false);

    let zs = dir.join("zero-shot");
    let out = ok(mocoop(&train_args(
        root_s,
        zs.to_str().unwrap(),
        &["--method", "zero-shot"],
    )));
    assert!(split(&out["results"], "new")["accuracy"].as_f64().is_some());
    assert!(!zs.join("checkpoint.safetensors").exists());
    let eval = ok(mocoop(&[
        "eval",
        "--run",
        zs.to_str().unwrap(),
        "--split",
        "all",
    ]));
    assert_eq!(split(&eval, "all")["classes"], 4);
}

/// CoCoOp (a meta-net shifts the context per image), KgCoOp and ProGrad (CoOp's prompt with a
/// term against the hand-made prompt): the loss falls, the method's own term is logged, test
/// accuracy is far above chance (25%), only what trains is saved, and the reloaded run evaluates
/// identically. A ProGrad flag on another method is refused.
#[test]
fn cocoop_kgcoop_and_prograd_learn_and_a_reloaded_run_evaluates_identically() {
    let meta_net = [
        "ctx.0",
        "meta_net.linear1.bias",
        "meta_net.linear1.weight",
        "meta_net.linear2.bias",
        "meta_net.linear2.weight",
    ];
    let cases: [(&str, Option<&str>, &[&str]); 3] = [
        ("cocoop", None, &meta_net),
        ("kgcoop", Some("kg"), &["ctx.0"]),
        ("prograd", Some("kl"), &["ctx.0"]),
    ];
    for (method, term, saved_names) in cases {
        let (dir, run, out, _) = train_ten_epochs(method, &["--method", method, "--lr", "0.016"]);
        let epochs = metrics(&run);
        let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
        assert!(
            number(last, "ce") < number(first, "ce"),
            "{method}: {first} -> {last}"
        );
        if let Some(term) = term {
            assert!(number(last, term).is_finite(), "{method}: {last}");
        }
        assert!(last.get("router_entropy").is_none(), "{method}: {last}");
        let trained = split(&out["results"], "all");
        assert!(number(trained, "accuracy") >= 50.0, "{method}: {trained}");
        let saved = mocoop_train::checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
        assert_eq!(
            saved.tensors.keys().collect::<Vec<_>>(),
            saved_names,
            "{method}"
        );
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["method"], method);
        assert_eq!(
            config["loss"]["hand_made"].is_string(),
            term.is_some(),
            "{config}"
        );
        evaluates_identically(&run, &out);
        if method == "kgcoop" {
            let root = dir.join("data");
            let other = dir.join("other");
            let err = failure(mocoop(&train_args(
                root.to_str().unwrap(),
                other.to_str().unwrap(),
                &["--method", "kgcoop", "--prograd-lambda", "0.5"],
            )));
            assert!(
                err.contains("--prograd-lambda does not apply to --method kgcoop"),
                "{err}"
            );
            let err = failure(mocoop(&train_args(
                root.to_str().unwrap(),
                other.to_str().unwrap(),
                &["--method", "cocoop", "--top-k", "3"],
            )));
            assert!(
                err.contains("--top-k does not apply to --method cocoop"),
                "{err}"
            );
        }
    }
}

/// LASP (CoOp's prompt, the text bias `w`, the image LayerNorms, its text loss against every
/// template): the loss and its text term fall, test accuracy is far above chance (25%), the
/// checkpoint holds the context, `w` and the LayerNorms, and the reloaded run evaluates and
/// classifies identically. A router flag is refused.
///
/// At τ = 0.1: the recipe's 0.01 is a real CLIP's temperature (logit scale 100); this random
/// CLIP's is 1/42, and at 0.01 its near-alike template features make the unclipped text term
/// collapse the classes onto one feature (cross-entropy stuck at ln 4).
#[test]
fn lasp_learns_and_a_reloaded_run_evaluates_and_classifies_identically() {
    let flags = ["--method", "lasp", "--lr", "0.016", "--text-tau", "0.1"];
    let (dir, run, out, _) = train_ten_epochs("lasp", &flags);
    let epochs = metrics(&run);
    let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
    for term in ["ce", "text", "loss"] {
        assert!(
            number(last, term) < number(first, term),
            "{term}: {first} -> {last}"
        );
    }
    let trained = split(&out["results"], "all");
    assert!(number(trained, "accuracy") >= 50.0, "{trained}");
    let saved = mocoop_train::checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
    let names: Vec<&String> = saved.tensors.keys().collect();
    assert_eq!(names[..2], ["ctx.0", "text_bias"], "{names:?}");
    assert!(
        names[2..]
            .iter()
            .all(|n| n.starts_with("visual.transformer."))
            && names.len() > 2,
        "{names:?}"
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["loss"]["text_target"], "templates", "{config}");
    evaluates_identically(&run, &out);
    let root = dir.join("data");
    classify_agrees_with_eval(&dir, &root, run.to_str().unwrap(), trained);
    let other = dir.join("other");
    let err = failure(mocoop(&train_args(
        root.to_str().unwrap(),
        other.to_str().unwrap(),
        &["--method", "lasp", "--top-k", "3"],
    )));
    assert!(
        err.contains("--top-k does not apply to --method lasp"),
        "{err}"
    );
}

/// The error of a `train` run on `dir`'s data into `dir/out` with `extra` flags, which must fail.
fn refused_training(dir: &Path, out: &str, extra: &[&str]) -> String {
    let root = dir.join("data");
    let out = dir.join(out);
    failure(mocoop(&train_args(
        root.to_str().unwrap(),
        out.to_str().unwrap(),
        extra,
    )))
}

/// VPT (visual tokens only), IVLP (tokens on both towers) and MaPLe (language tokens coupled into
/// the image encoder), two layers deep on the fixture's two-layer towers: the loss falls, test
/// accuracy is far above chance (25%), only the learned tokens (and MaPLe's couplings) are saved,
/// and the reloaded run evaluates identically. A depth past the encoders' layers, a prompt past
/// the context length and --prompt-depth on another method are clear errors.
#[test]
fn vpt_ivlp_and_maple_learn_and_a_reloaded_run_evaluates_identically() {
    let cases: [(&str, &[&str]); 3] = [
        ("vpt", &["vision.0", "vision.1"]),
        ("ivlp", &["ctx.0", "text_deep.1", "vision.0", "vision.1"]),
        (
            "maple",
            &[
                "coupling.0.bias",
                "coupling.0.weight",
                "coupling.1.bias",
                "coupling.1.weight",
                "ctx.0",
                "text_deep.1",
            ],
        ),
    ];
    for (method, saved_names) in cases {
        let flags = ["--method", method, "--prompt-depth", "2", "--lr", "0.02"];
        let (dir, run, out, _) = train_ten_epochs(method, &flags);
        let epochs = metrics(&run);
        let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
        assert!(
            number(last, "ce") < number(first, "ce"),
            "{method}: {first} -> {last}"
        );
        let trained = split(&out["results"], "all");
        assert!(number(trained, "accuracy") >= 50.0, "{method}: {trained}");
        let saved = mocoop_train::checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
        assert_eq!(
            saved.tensors.keys().collect::<Vec<_>>(),
            saved_names,
            "{method}"
        );
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["deep"]["vision_depth"], 2, "{config}");
        evaluates_identically(&run, &out);
        classify_agrees_with_eval(&dir, &dir.join("data"), run.to_str().unwrap(), trained);
        if method == "maple" {
            // Each in a directory of its own: a run whose model cannot be built leaves its
            // directory behind.
            let train = |out: &str, extra: &[&str]| refused_training(&dir, out, extra);
            let err = train("deep", &["--method", "maple", "--prompt-depth", "3"]);
            assert!(
                err.contains("deeper than the text encoder's 2 layers"),
                "{err}"
            );
            let long = ["--method", "maple", "--prompt-depth", "2", "--n-ctx", "80"];
            let err = train("long", &long);
            assert!(err.contains("context length 77"), "{err}");
            let err = train("coop", &["--method", "coop", "--prompt-depth", "2"]);
            assert!(
                err.contains("--prompt-depth does not apply to --method coop"),
                "{err}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();

    // A groups file whose template has no {}.
    let groups = dir.join("groups.toml");
    std::fs::write(&groups, "[dtd]\ngroups = [[\"a photo\"]]\n").unwrap();
    let out = dir.join("g");
    let err = failure(mocoop(&train_args(
        root_s,
        out.to_str().unwrap(),
        &["--groups", groups.to_str().unwrap(), "--epochs", "1"],
    )));
    assert!(err.contains("exactly one '{}'"), "{err}");

    // A class name that does not fit the context length.
    let long_root = dir.join("long");
    let long = "very ".repeat(80) + "red";
    make_dataset(
        &long_root,
        &[("red", [200, 0, 0]), (long.as_str(), [0, 0, 200])],
    );
    let out = dir.join("l");
    let err = failure(mocoop(&train_args(
        long_root.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--setting", "fewshot", "--epochs", "1"],
    )));
    assert!(
        err.contains("very very very") && err.contains("context length"),
        "{err}"
    );

    // A loss that becomes NaN stops training with the step, keeping the last good checkpoint.
    let out = dir.join("nan");
    let err = failure(mocoop(&train_args(
        root_s,
        out.to_str().unwrap(),
        &[
            "--setting",
            "fewshot",
            "--epochs",
            "3",
            "--warmup-epochs",
            "1",
            "--lr",
            "1e30",
            "--clip-norm",
            "0",
        ],
    )));
    // Epoch 1 (4 steps at the warm-up rate) is fine; epoch 2 diverges.
    assert!(
        err.contains("non-finite loss at step") && err.contains("(epoch 2;"),
        "{err}"
    );
    assert!(err.contains("epoch-001.safetensors"), "{err}");
    assert!(out.join("checkpoints/epoch-001.safetensors").is_file());
    assert!(out.join("checkpoint.safetensors").is_file());
}

/// The position of `--seeds`' value in `args`.
fn seeds_at(args: &[&str]) -> usize {
    args.iter().position(|a| *a == "--seeds").unwrap() + 1
}

#[test]
fn protocol_runs_the_grid_resumes_and_writes_the_table() {
    let dir = scratch("protocol");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let out = dir.join("grid");
    let args = protocol_args(root.to_str().unwrap(), out.to_str().unwrap(), "1,2", &[]);
    let first = mocoop(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let md = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        md.contains("| Dataset | Base | New | HM |") && md.contains("| dtd |"),
        "{md}"
    );
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results-base2new-mocoop.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 2);
    assert!(out.join("results-base2new-mocoop.md").is_file());
    assert!(out.join("mocoop/dtd/shots8-seed2/results.json").is_file());

    // The report shows every method run into the same folder: a CoOp grid beside MoCoOp's.
    let coop = mocoop(&[&args[..], &["--method", "coop"]].concat());
    assert!(
        coop.status.success(),
        "{}",
        String::from_utf8_lossy(&coop.stderr)
    );
    let report = out.join("report-base2new");
    let svg = std::fs::read_to_string(report.join("base_new_hm.svg")).unwrap();
    for text in [">dtd · coop<", ">dtd · mocoop<", ">base<", ">new<", ">HM<"] {
        let found = svg
            .replace(['\n', ' '], "")
            .contains(&text.replace(' ', ""));
        assert!(found, "{text} not in the figure");
    }
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("base2new — coop") && html.contains("base2new — mocoop"));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 1);
    assert!(report.join("summary.md").is_file() && report.join("base_new_hm.png").is_file());

    // A second call reuses the finished runs and reproduces the table.
    let again = mocoop(&args);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert_eq!(log.matches("done before").count(), 2, "{log}");
    assert_eq!(String::from_utf8_lossy(&again.stdout), md);

    // A cell killed before it finished (here: after its first epoch checkpoint) is resumed, not
    // redone, here on two data-parallel workers, and the table comes out the same (two workers
    // train what one trains: see data_parallel.rs).
    let cell = out.join("mocoop/dtd/shots8-seed2");
    for file in [
        "results.json",
        "checkpoint.safetensors",
        "checkpoints/epoch-002.safetensors",
    ] {
        std::fs::remove_file(cell.join(file)).unwrap();
    }
    let first_epoch = cell.join("checkpoints/epoch-001.safetensors");
    let written = std::fs::metadata(&first_epoch).unwrap().modified().unwrap();
    let two_workers = [&args[..], &["--device", "cpu,cpu"]].concat();
    let resumed = mocoop(&two_workers);
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert_eq!(log.matches("done before").count(), 1, "{log}");
    assert_eq!(String::from_utf8_lossy(&resumed.stdout), md);
    let kept = std::fs::metadata(&first_epoch).unwrap().modified().unwrap();
    assert_eq!(written, kept, "the finished epoch was trained again");
    assert!(cell.join("checkpoints/epoch-002.safetensors").is_file());

    // The device list reaches training: more workers than images per batch is refused there.
    let mut many = args.to_vec();
    let at = seeds_at(&many);
    many[at] = "3";
    let nine = [
        &many[..],
        &["--device", "cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu,cpu"],
    ]
    .concat();
    let err = failure(mocoop(&nine));
    assert!(err.contains("9 devices need a batch size"), "{err}");

    // A seed listed twice would count twice in the means: refused.
    let mut twice = args.to_vec();
    let at = seeds_at(&twice);
    twice[at] = "1,1";
    let err = failure(mocoop(&twice));
    assert!(err.contains("--seeds lists 1 twice"), "{err}");
}

#[test]
fn a_bad_training_image_stops_the_run_unless_skipped_and_reported() {
    let root = scratch("bad-image");
    make_dataset(&root, &CLASSES);
    let bad = root.join("dtd/images/class0/0.bmp");
    std::fs::write(&bad, b"not a bitmap").unwrap();
    let root_str = root.to_str().unwrap();
    let out = root.join("run");
    let out_str = out.to_str().unwrap();
    let quick = ["--method", "coop", "--epochs", "1", "--no-eval"];

    let err = failure(mocoop(&train_args(root_str, out_str, &quick)));
    assert!(err.contains("0.bmp"), "{err}");

    let mut extra = quick.to_vec();
    extra.extend(["--skip-bad-images", "--overwrite"]);
    let output = mocoop(&train_args(root_str, out_str, &extra));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ok(output);
    assert!(
        stderr.contains("skipped 1 unreadable training image") && stderr.contains("0.bmp"),
        "{stderr}"
    );
}

/// Every final tensor of run `a` within `tol` of run `b`'s (both runs have the same tensors).
fn assert_same_prompts(a: &std::path::Path, b: &std::path::Path, tol: f32) {
    let (a, b) = (trained(a), trained(b));
    let shapes = |t: &[(String, Vec<f32>)]| -> Vec<(String, usize)> {
        t.iter().map(|(n, v)| (n.clone(), v.len())).collect()
    };
    assert!(!a.is_empty(), "no trained tensors");
    assert_eq!(shapes(&a), shapes(&b));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < tol, "{name} differs by {worst}");
    }
}

/// Trains 3 few-shot epochs with `flags` on a fresh miniature dataset, once as is and once with
/// `extra` added, and checks that both runs learned the same prompts (to float rounding).
/// Returns the scratch folder and both outputs (without, with `extra`).
fn same_prompts_with_and_without(
    name: &str,
    flags: &[&str],
    extra: &[&str],
) -> (std::path::PathBuf, Value, Value) {
    same_prompts_with_and_without_within(name, flags, extra, 1e-6)
}

/// [`same_prompts_with_and_without`] to tolerance `tol`.
fn same_prompts_with_and_without_within(
    name: &str,
    flags: &[&str],
    extra: &[&str],
    tol: f32,
) -> (std::path::PathBuf, Value, Value) {
    let dir = scratch(name);
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let mut base = vec![
        "--setting",
        "fewshot",
        "--epochs",
        "3",
        "--warmup-epochs",
        "0",
    ];
    base.extend_from_slice(flags);
    let (without, with) = (dir.join("without"), dir.join("with"));
    let expected = ok(mocoop(&train_args(
        root_s,
        without.to_str().unwrap(),
        &base,
    )));
    base.extend_from_slice(extra);
    let got = ok(mocoop(&train_args(root_s, with.to_str().unwrap(), &base)));
    assert_same_prompts(&without, &with, tol);
    (dir, expected, got)
}

#[test]
fn cached_image_features_train_like_encoding_every_step() {
    // As many views as epochs: the cached run sees the very augmented images the plain run does,
    // so it must learn the same prompts (up to float rounding of differently batched encoding).
    let flags = ["--ln-tuning", "false"];
    let (dir, expected, got) =
        same_prompts_with_and_without("cached", &flags, &["--cached-views", "3"]);
    assert_eq!(
        present(split(&expected["results"], "all"), "correct"),
        present(split(&got["results"], "all"), "correct")
    );

    // Fewer views than epochs is allowed (views repeat); with LN tuning it is refused.
    let root = dir.join("data");
    let root_s = root.to_str().unwrap();
    let few = dir.join("few");
    let fewer = [
        "--setting",
        "fewshot",
        "--epochs",
        "3",
        "--warmup-epochs",
        "0",
        "--ln-tuning",
        "false",
        "--cached-views",
        "1",
    ];
    ok(mocoop(&train_args(root_s, few.to_str().unwrap(), &fewer)));
    let err = failure(mocoop(&train_args(
        root_s,
        dir.join("ln").to_str().unwrap(),
        &["--cached-views", "2"],
    )));
    assert!(
        err.contains("--cached-views needs --ln-tuning false"),
        "{err}"
    );
}

#[test]
fn routing_only_the_used_experts_learns_the_same_prompts() {
    // Without the text-level loss, a top-1 step needs only the experts its images are routed to.
    let (_, expected, got) = same_prompts_with_and_without(
        "subset",
        &["--lambda-text", "0", "--top-k", "1"],
        &["--encode-all-experts"],
    );
    assert_eq!(present(&expected, "results"), present(&got, "results"));
}

#[test]
fn half_precision_training_learns_and_is_recorded() {
    // f16 (with dynamic loss scaling) learns the miniature task as f32 does.
    let (_, run, out, stderr) = train_ten_epochs("f16", &["--precision", "f16"]);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["precision"], "f16");
    let epochs = metrics(&run);
    let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
    assert!(
        number(last, "ce") < number(first, "ce"),
        "{first} -> {last}"
    );
    // The scale came down from 2^16 to where the f16 gradients are finite, and stayed finite.
    let scale = last["loss_scale"].as_f64().unwrap();
    assert!(scale > 0.0 && scale < 65536.0, "{last}");
    assert!(
        stderr.contains("step(s) skipped for overflowing gradients"),
        "{stderr}"
    );
    let trained = split(&out["results"], "all");
    assert!(trained["accuracy"].as_f64().unwrap() >= 75.0, "{out}");

    // bf16 training stays close to f32 training.
    same_prompts_with_and_without_within("bf16", &[], &["--precision", "bf16"], 2e-3);
}

#[test]
fn a_short_run_leaves_the_warm_up_and_a_warm_up_as_long_as_the_run_is_warned_about() {
    let dir = scratch("short-run");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    // Two epochs of the 50-epoch recipe (5 of warm-up): one at the warm-up rate, one at the rate.
    let run = dir.join("run");
    let args = ["--method", "coop", "--epochs", "2", "--no-eval"];
    let output = mocoop(&train_args(root_s, run.to_str().unwrap(), &args));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ok(output);
    assert!(!stderr.contains("warning"), "{stderr}");
    let lr: Vec<f64> = metrics(&run)
        .iter()
        .map(|e| e["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lr.len(), 2);
    assert_eq!(lr[0], 1e-5);
    assert!((lr[1] - 0.032 * 8.0 / 32.0).abs() < 1e-9, "{lr:?}");

    // Asked for explicitly, the warm-up is kept and warned about (this run then finds no data).
    let out = dir.join("all-warm-up");
    let args = ["--epochs", "2", "--warmup-epochs", "2"];
    let err = failure(mocoop(&train_args(
        dir.join("nothing").to_str().unwrap(),
        out.to_str().unwrap(),
        &args,
    )));
    assert!(
        err.contains("warning: --warmup-epochs 2 covers all 2 epochs"),
        "{err}"
    );
}

/// PromptSRC (IVLP's tokens two layers deep, regulated by frozen CLIP): the cross-entropy falls
/// and each self-regulating term is logged; the run keeps the Gaussian-weighted aggregate of its
/// epochs' tokens (the final checkpoint is `Σ_e w_e · tokens_e` over the epoch checkpoints, with
/// `w_e ∝ exp(−(e − mean)² / 2 std²)`, and the last epoch's carries that sum beside its own
/// tokens); eval and `classify --prompts` of the reloaded run agree with training's evaluation,
/// and a protocol grid runs it. Its flags on another method, and a depth past the towers' layers, are clear errors.
#[test]
fn promptsrc_keeps_the_epochs_aggregate_and_a_reloaded_run_evaluates_identically() {
    let flags = [
        "--method",
        "promptsrc",
        "--prompt-depth",
        "2",
        "--lr",
        "0.02",
        "--gpa-mean",
        "7",
        "--gpa-std",
        "2",
        "--keep-checkpoints",
        "10",
    ];
    let (dir, run, out, _) = train_ten_epochs("promptsrc", &flags);
    let epochs = metrics(&run);
    let (first, last) = (&epochs[0]["means"], &epochs[9]["means"]);
    assert!(
        number(last, "ce") < number(first, "ce"),
        "{first} -> {last}"
    );
    for key in ["scl_text", "scl_image", "scl_logits"] {
        let value = number(last, key);
        assert!(value.is_finite() && value > 0.0, "{key}: {last}");
    }
    let trained = split(&out["results"], "all");
    assert!(number(trained, "accuracy") >= 50.0, "{trained}");

    let read = |name: &str| {
        mocoop_train::checkpoint::read(&run.join(name))
            .unwrap()
            .tensors
    };
    let kept = read("checkpoint.safetensors");
    let names = ["ctx.0", "text_deep.1", "vision.0", "vision.1"];
    assert_eq!(kept.keys().collect::<Vec<_>>(), names);
    let density = |e: f64| (-0.5 * ((e - 7.0) / 2.0).powi(2)).exp();
    let total: f64 = (1..=10).map(|e| density(e as f64)).sum();
    let last_epoch = read("checkpoints/epoch-010.safetensors");
    for name in names {
        let mut want = vec![0.0f64; kept[name].num_elements()];
        for e in 1..=10 {
            let epoch = read(&format!("checkpoints/epoch-{e:03}.safetensors"));
            let w = density(e as f64) / total;
            for (acc, v) in want.iter_mut().zip(epoch[name].to_vec::<f32>().unwrap()) {
                *acc += w * f64::from(v);
            }
        }
        let got = kept[name].to_vec::<f32>().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "{name}: the kept tokens are not the aggregate ({worst})"
        );
        assert_ne!(got, last_epoch[name].to_vec::<f32>().unwrap(), "{name}");
        let sum = &last_epoch[&format!("gpa.{name}")];
        assert_eq!(sum, &kept[name], "{name}: the last epoch's running sum");
    }
    evaluates_identically(&run, &out);
    let root = dir.join("data");
    classify_agrees_with_eval(&dir, &root, run.to_str().unwrap(), trained);

    // A protocol grid trains and tables it like any method.
    let grid = dir.join("grid");
    let extra = ["--method", "promptsrc", "--prompt-depth", "2"];
    let args = protocol_args(root.to_str().unwrap(), grid.to_str().unwrap(), "1", &extra);
    let output = mocoop(&args);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let table = grid.join("results-base2new-promptsrc.json");
    let table: Value = serde_json::from_str(&std::fs::read_to_string(table).unwrap()).unwrap();
    assert_eq!(table["cells"].as_array().unwrap().len(), 1, "{table}");

    let train = |out: &str, extra: &[&str]| refused_training(&dir, out, extra);
    let err = train("deep", &["--method", "promptsrc", "--prompt-depth", "3"]);
    assert!(
        err.contains("deeper than the text encoder's 2 layers"),
        "{err}"
    );
    let err = train("maple", &["--method", "maple", "--gpa-mean", "3"]);
    assert!(
        err.contains("--gpa-mean does not apply to --method maple (only to promptsrc)"),
        "{err}"
    );
    let err = train("std", &["--method", "promptsrc", "--gpa-std", "0"]);
    assert!(err.contains("--gpa-std must be positive"), "{err}");
}
