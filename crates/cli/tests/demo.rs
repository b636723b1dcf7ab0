//! A reduced `mocoop demo --methods all` end to end: generated data, the shipped CLIP, zero-shot,
//! CoOp, CoCoOp, KgCoOp, MaPLe and MoCoOp base-to-new, and the report folder.

use std::process::Command;

use serde_json::Value;

/// Base and new accuracy (%) of this test's reduced demo (seed 1, 2 shots, 2 epochs, 3 test
/// images per class), as measured on the development machine; the same with 1 to 8 threads.
const MEASURED: [(&str, [f64; 2]); 6] = [
    ("zero-shot CLIP", [77.1, 64.6]),
    ("CoOp", [77.1, 60.4]),
    ("CoCoOp", [72.9, 62.5]),
    ("KgCoOp", [77.1, 62.5]),
    ("MaPLe", [79.2, 64.6]),
    ("MoCoOp", [75.0, 66.7]),
];

/// How far (accuracy points) an accuracy may be from the measured one: 5 of the 48 test images
/// of a half. Chance is 6.25.
const BAND: f64 = 10.5;

/// A run's base and new accuracy from their split's counts (16 classes and 48 images each), and
/// its reported harmonic mean.
fn base_new_hm(results: &Value) -> (f64, f64, f64) {
    let accuracy = |name: &str| {
        let split = results["splits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["split"] == name)
            .unwrap_or_else(|| panic!("no {name} split in {results}"));
        assert_eq!(split["classes"], 16, "{split}");
        assert_eq!(split["images"], 16 * 3, "{split}");
        let correct = split["correct"].as_f64().unwrap();
        let accuracy = split["accuracy"].as_f64().unwrap();
        assert!((accuracy - 100.0 * correct / 48.0).abs() < 1e-9, "{split}");
        accuracy
    };
    let hm = results["hm"].as_f64().expect("a harmonic mean");
    (accuracy("base"), accuracy("new"), hm)
}

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
            "--methods",
            "all",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The table's rows, in the table's order.
    let rows: Vec<String> = stdout
        .lines()
        .skip(1)
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len().saturating_sub(3)].join(" ")
        })
        .collect();
    assert_eq!(rows, MEASURED.map(|(m, _)| m), "{stdout}");
    // Progress is visible throughout.
    for step in [
        "[1/8]", "[2/8]", "[3/8]", "[4/8]", "[5/8]", "[6/8]", "[7/8]",
    ] {
        assert!(stderr.contains(step), "{stderr}");
    }

    let report = out.join("report");
    for file in [
        "summary.md",
        "report.html",
        "training_curves.png",
        "training_curves.svg",
        "routing_by_style.png",
        "routing_by_style.svg",
        "routing_by_class.png",
        "routing_by_class.svg",
        "expert_examples.png",
    ] {
        assert!(report.join(file).is_file(), "{file} missing");
    }
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    for (method, measured) in MEASURED {
        let run = &results["methods"][method];
        let (base, new, hm) = base_new_hm(&run["results"]);
        // The table printed is the one in the report.
        let printed: Vec<&str> = stdout
            .lines()
            .find_map(|l| l.strip_prefix(method))
            .unwrap_or_else(|| panic!("no {method} row in\n{stdout}"))
            .split_whitespace()
            .collect();
        let reported = [base, new, hm].map(|v| format!("{v:.1}"));
        assert_eq!(printed, reported, "{method}");
        assert!(
            (hm - 2.0 * base * new / (base + new)).abs() < 1e-9,
            "{method}: HM {hm} of {base} and {new}"
        );
        // Far above the 1/16 chance level, and near what this seeded run measured: a broken
        // encoder, prompt or label mapping falls to chance, float differences between machines
        // move an accuracy by an image or two (about 2 points each).
        for (name, got, expected) in [("base", base, measured[0]), ("new", new, measured[1])] {
            assert!(
                (got - expected).abs() <= BAND,
                "{method} {name}: {got}, measured {expected}"
            );
        }
        let epochs = run["epochs"].as_array().unwrap();
        let trained = method != "zero-shot CLIP";
        assert_eq!(epochs.len(), if trained { 2 } else { 0 }, "{method}");
        for epoch in epochs {
            let loss = epoch["loss"].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{method}: {epoch}");
        }
    }

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

    // The heat map of the styles shows those counts, row by row, and names the experts by
    // their templates.
    let svg = std::fs::read_to_string(report.join("routing_by_style.svg")).unwrap();
    let cells: Vec<u64> = svg
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next()?.trim().parse().ok())
        .collect();
    let counts: Vec<u64> = routing["by_style"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()))
        .collect();
    assert_eq!(cells, counts);
    for template in routing["templates"].as_array().unwrap() {
        let template = template.as_str().unwrap().replace('&', "&amp;");
        assert!(svg.contains(&template), "{template} not on the heat map");
    }
    // `inspect --test-load` finds the same router choices on the same test images.
    let inspect = Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args(["inspect", "--json", "--test-load"])
        .arg(out.join("runs/mocoop"))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["test_images"], 32 * 3);
    let experts = inspect["experts"].as_array().unwrap();
    for (e, expert) in experts.iter().enumerate() {
        let picked: u64 = routing["by_style"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v[e].as_u64().unwrap())
            .sum();
        let share = expert["test_load"].as_f64().unwrap();
        assert!(
            (share - picked as f64 / (32 * 3 * 2) as f64).abs() < 1e-12,
            "expert {e}"
        );
    }

    // The page holds the tables and every figure, inlined.
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4);
    assert!(html.contains("<td>MoCoOp</td>") && html.contains("Configuration"));
}
