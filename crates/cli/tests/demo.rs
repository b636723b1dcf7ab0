//! A reduced `mocoop demo` end to end: generated data, the shipped CLIP, zero-shot, CoOp and
//! MoCoOp base-to-new, and the report folder.

use std::process::Command;

use serde_json::Value;

#[test]
fn reduced_demo_writes_table_and_report() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args([
            "demo",
            "--epochs",
            "2",
            "--shots",
            "2",
            "--test-images",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for method in ["zero-shot CLIP", "CoOp", "MoCoOp"] {
        assert!(stdout.contains(method), "{stdout}");
    }
    // Progress is visible throughout.
    for step in ["[1/5]", "[2/5]", "[3/5]", "[4/5]"] {
        assert!(stderr.contains(step), "{stderr}");
    }

    let report = out.join("report");
    for file in [
        "summary.md",
        "training_curves.png",
        "routing_by_style.png",
        "routing_by_class.png",
    ] {
        assert!(report.join(file).is_file(), "{file} missing");
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    for method in ["zero-shot CLIP", "CoOp", "MoCoOp"] {
        let hm = results["methods"][method]["results"]["hm"]
            .as_f64()
            .unwrap();
        assert!((0.0..=100.0).contains(&hm), "{method}: {hm}");
    }
    // The shipped CLIP has real zero-shot ability: far above the 1/16 chance level.
    let zero_shot = &results["methods"]["zero-shot CLIP"]["results"]["hm"];
    assert!(zero_shot.as_f64().unwrap() > 25.0, "{zero_shot}");

    // Every test image (32 classes x 3) contributes exactly top-K = 2 routing decisions, counted
    // from the router's outputs, per style and per class alike.
    let routing = &results["routing"];
    let total = |v: &Value| -> u64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum()
    };
    let by_style: u64 = routing["by_style"]
        .as_object()
        .unwrap()
        .values()
        .map(total)
        .sum();
    let by_class: u64 = routing["by_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| total(&pair[1]))
        .sum();
    assert_eq!(by_style, 32 * 3 * 2);
    assert_eq!(by_class, 32 * 3 * 2);
}
