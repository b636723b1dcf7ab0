//! `mocoop groups suggest` and `train --groups auto` end to end, on the shipped shape-world CLIP.

use std::path::{Path, PathBuf};

use mocoop_model::templates::TemplateTable;
use serde_json::Value;

use crate::common::{CLASSES, failure, make_dataset, metrics, mocoop, ok, scratch, train_args};

fn shapeworld_clip() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/shapeworld-clip.safetensors")
        .to_str()
        .unwrap()
        .to_string()
}

/// `groups suggest` on the shipped CLIP with `extra`, its output checked for success.
fn suggest(extra: &[&str]) -> std::process::Output {
    let weights = shapeworld_clip();
    let mut args = vec!["groups", "suggest", "--weights", weights.as_str()];
    args.extend_from_slice(extra);
    mocoop(&args)
}

/// The groups of the only section of a groups file, read as `train --groups` reads it.
fn groups_of(path: &Path) -> Vec<Vec<String>> {
    let table = TemplateTable::from_file(path).unwrap();
    let sections: Vec<&str> = table.datasets().collect();
    assert_eq!(sections.len(), 1, "one section");
    table.groups(sections[0]).unwrap().groups().to_vec()
}

fn config_of(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
}

#[test]
fn suggested_groups_are_deterministic_and_train_reads_them() {
    let dir = scratch("groups-suggest");
    let names = dir.join("names.txt");
    let classes: Vec<&str> = CLASSES.iter().map(|(name, _)| *name).collect();
    std::fs::write(&names, classes.join("\n")).unwrap();
    let classes_arg = format!("@{}", names.display());
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    for out in [&a, &b] {
        let run = suggest(&["--classes", &classes_arg, "--out", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{stderr}");
        assert!(stderr.contains("groups of 80 templates"), "{stderr}");
    }
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(&b).unwrap(),
        "two runs, one file"
    );
    let printed = suggest(&["--classes", &classes_arg]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        text,
        "printed as written"
    );

    // Every one of the 80 templates, once; a comment per group with its cohesion.
    let groups = groups_of(&a);
    let mut all: Vec<&String> = groups.iter().flatten().collect();
    assert_eq!(all.len(), 80);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 80);
    assert!((2..=20).contains(&groups.len()), "{} groups", groups.len());
    assert_eq!(text.matches("  # group ").count(), groups.len());
    assert!(
        text.contains("cohesion 0.") || text.contains("cohesion 1."),
        "{text}"
    );
    assert!(text.contains("silhouette by K  2: "), "{text}");

    // A fixed count is honoured, and `train --groups` trains one expert per group.
    let three = dir.join("three.toml");
    ok_status(suggest(&[
        "--classes",
        "red,yellow",
        "--groups",
        "3",
        "--out",
        three.to_str().unwrap(),
    ]));
    assert_eq!(groups_of(&three).len(), 3);
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let run = dir.join("run");
    let (root_s, run_s) = (root.to_str().unwrap(), run.to_str().unwrap());
    let weights = shapeworld_clip();
    let mut args = train_args(
        root_s,
        run_s,
        &["--groups", a.to_str().unwrap(), "--epochs", "1"],
    );
    args.extend(["--no-eval", "--setting", "fewshot"]);
    let w = args.iter().position(|x| *x == "--weights").unwrap() + 1;
    args[w] = &weights;
    ok(mocoop(&args));
    let epochs = metrics(&run);
    assert_eq!(
        epochs[0]["expert_load"].as_array().unwrap().len(),
        groups.len()
    );
}

fn ok_status(output: std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn train_groups_auto_records_its_groups_in_the_run() {
    let dir = scratch("groups-auto");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let run = dir.join("zero-shot");
    let (root_s, run_s) = (root.to_str().unwrap(), run.to_str().unwrap());
    let weights = shapeworld_clip();
    let mut args = train_args(
        root_s,
        run_s,
        &["--method", "zero-shot", "--groups", "auto"],
    );
    let w = args.iter().position(|x| *x == "--weights").unwrap() + 1;
    args[w] = &weights;
    let trained = ok(mocoop(&args));

    // The run names its own groups file, an absolute path into the run directory.
    let file = run.join("groups.toml");
    let config = config_of(&run);
    let recorded = PathBuf::from(config["data"]["groups_file"].as_str().unwrap());
    assert!(recorded.is_absolute(), "{recorded:?}");
    assert_eq!(
        recorded.canonicalize().unwrap(),
        file.canonicalize().unwrap()
    );
    let groups = groups_of(&file);
    assert_eq!(groups.iter().flatten().count(), 80);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("[dtd]") && text.contains("train --groups auto"),
        "{text}"
    );

    // Evaluation reads the recorded groups: the same accuracy, and none without the file.
    let eval = ok(mocoop(&["eval", "--run", run_s, "--workers", "1"]));
    assert_eq!(eval["splits"], trained["results"]["splits"]);
    let before = text.clone();
    let err = failure(mocoop(&args));
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "left as it was"
    );
    std::fs::remove_file(&file).unwrap();
    let err = failure(mocoop(&["eval", "--run", run_s, "--workers", "1"]));
    assert!(err.contains("groups.toml"), "{err}");

    // A protocol grid cannot suggest groups per cell.
    let grid = dir.join("grid");
    let grid_s = grid.to_str().unwrap();
    let protocol = crate::common::protocol_args(root_s, grid_s, "1", &["--groups", "auto"]);
    let err = failure(mocoop(&protocol));
    assert!(
        err.contains("--groups auto is for `mocoop train` only"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("groups-bad");
    let pool = dir.join("pool.txt");
    std::fs::write(
        &pool,
        "a photo of a {}.\n\na sketch of a {}.\nart of the {}.\n",
    )
    .unwrap();
    let pool_s = pool.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--classes", "red", "--templates", pool_s, "--groups", "4"],
            "cannot make 4 groups from 3 templates",
        ),
        (
            vec!["--classes", "red", "--groups", "81"],
            "cannot make 81 groups from 80 templates",
        ),
        (
            vec!["--classes", "red", "--groups", "0"],
            "must be at least 1 (got 0)",
        ),
        (
            vec!["--classes", "red", "--groups", "many"],
            "a number of groups or 'auto'",
        ),
        (vec!["--classes", " , "], "no class names"),
    ];
    for (args, expected) in cases {
        let err = failure(suggest(&args));
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let err = failure(suggest(&[
        "--classes",
        "red",
        "--templates",
        empty.to_str().unwrap(),
    ]));
    assert!(err.contains("empty.txt holds no templates"), "{err}");
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "a photo of a {}.\na photo\n").unwrap();
    let err = failure(suggest(&[
        "--classes",
        "red",
        "--templates",
        bad.to_str().unwrap(),
    ]));
    assert!(
        err.contains("bad.txt line 2: template 'a photo' must contain exactly one '{}'"),
        "{err}"
    );
    let names = dir.join("names.txt");
    std::fs::write(&names, "\n").unwrap();
    let err = failure(suggest(&["--classes", &format!("@{}", names.display())]));
    assert!(err.contains("no class names"), "{err}");
}
