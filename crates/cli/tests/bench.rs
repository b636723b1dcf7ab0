//! `mocoop bench` end to end on a toy model: every case runs in its own process and reports a
//! positive, finite throughput with plausible fields in the JSON. No timing is asserted.

use std::process::Command;

use serde_json::Value;

const CASES: [&str; 10] = [
    "train-ln",
    "train-no-ln",
    "train-imagenet",
    "train-cocoop",
    "train-cocoop-b8",
    "train-kgcoop",
    "train-prograd",
    "train-maple",
    "infer-cached",
    "encode-image",
];

/// Runs `mocoop bench` on the tiny geometry (batch 4, 10 classes, 3 experts, 1 timed step) with
/// `extra` arguments; returns its table and its JSON report.
fn bench(extra: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args([
            "bench",
            "--geometry",
            "tiny",
            "--steps",
            "1",
            "--batch",
            "4",
            "--classes",
            "10",
            "--experts",
            "3",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, report)
}

#[test]
fn bench_reports_every_case() {
    let (stdout, report) = bench(&["--device", "cpu", "--warmup", "1", "--breakdown"]);
    assert_eq!(report["implementation"], "mocoop-burn");
    assert_eq!(report["date"].as_str().unwrap().len(), 10);
    assert!(!report["machine"].as_str().unwrap().is_empty());
    assert!(report["threads"].as_u64().unwrap() >= 1);
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(names, CASES);
    for case in cases {
        let name = case["case"].as_str().unwrap();
        assert!(stdout.contains(name), "{name} missing from the table");
        assert_eq!(case["geometry"], "tiny");
        assert_eq!(case["device"], "cpu");
        let batch = match name {
            "train-cocoop" => 1,
            "train-cocoop-b8" => 8,
            _ => 4,
        };
        assert_eq!(case["batch"], batch, "{name}");
        assert_eq!(case["steps"], 1);
        for key in ["images_per_s", "ms_per_step"] {
            let v = case[key].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{name}: {key} = {v}");
        }
        let throughput = case["images_per_s"].as_f64().unwrap();
        let ms = case["ms_per_step"].as_f64().unwrap();
        assert!(
            (throughput * ms / (batch as f64 * 1e3) - 1.0).abs() < 1e-6,
            "{name}: images/s vs ms/step"
        );
        if cfg!(target_os = "linux") {
            let rss = case["peak_rss_mib"].as_f64().unwrap();
            assert!(
                rss > 1.0 && rss < 64.0 * 1024.0,
                "{name}: peak RSS {rss} MiB"
            );
        }
        let mocoop = ["train-ln", "train-no-ln", "train-imagenet", "infer-cached"];
        let tuned = ["train-ln", "train-imagenet"].contains(&name);
        assert_eq!(case["ln_tuning"], tuned, "{name}");
        // The one-prompt methods' cases (E = 1) have no breakdown of their own.
        let one_prompt = name.starts_with("train") && !mocoop.contains(&name);
        if one_prompt {
            assert_eq!(
                (&case["experts"], &case["classes"]),
                (&1.into(), &50.into())
            );
        }
        let breakdown = case["breakdown"].as_array().unwrap();
        assert_eq!(
            !breakdown.is_empty(),
            mocoop.contains(&name),
            "{name}: breakdown"
        );
        for part in breakdown {
            let ms = part[1].as_f64().unwrap();
            assert!(ms.is_finite() && ms >= 0.0, "{name}: {part}");
        }
    }
    let imagenet = &cases[2];
    assert_eq!(imagenet["experts"], 3);
    assert_eq!(imagenet["classes"], 10);
    assert_eq!(cases[0]["experts"], 5);
    assert_eq!(cases[0]["classes"], 50);
}

#[test]
fn bench_runs_in_half_precision() {
    let (stdout, report) = bench(&["--cases", "train-ln,infer-cached", "--precision", "f16"]);
    assert!(stdout.contains("f16"), "{stdout}");
    assert_eq!(report["precision"], "f16");
    for case in report["cases"].as_array().unwrap() {
        let v = case["images_per_s"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{case}");
    }
}

#[test]
fn bench_trains_on_two_cpu_workers() {
    let (_, report) = bench(&["--device", "cpu,cpu"]);
    let cases = report["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["case"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        CASES[..3],
        "several devices: the training cases only"
    );
    for case in cases {
        assert_eq!(case["device"], "cpu,cpu", "{case}");
        let v = case["images_per_s"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{case}");
    }
}

#[test]
fn bench_shares_the_prompts_between_two_cpu_devices() {
    let (stdout, report) = bench(&[
        "--device",
        "cpu,cpu",
        "--split",
        "classes",
        "--cases",
        "train-imagenet",
    ]);
    assert!(stdout.contains("cpu,cpu split by classes"), "{stdout}");
    let case = &report["cases"][0];
    assert_eq!(case["device"], "cpu,cpu split by classes", "{case}");
    let v = case["images_per_s"].as_f64().unwrap();
    assert!(v.is_finite() && v > 0.0, "{case}");
}

#[test]
fn bench_refuses_several_devices_for_inference() {
    let output = Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args(["bench", "--geometry", "tiny", "--device", "cpu,cpu"])
        .args(["--cases", "train-ln,encode-image"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("encode-image is an inference case and runs on one device"),
        "{stderr}"
    );
}

/// The RN50 geometry (a ResNet image tower) encodes images, and refuses the cases that need a
/// ViT: tuning image LayerNorms, prompting image layers.
#[test]
fn bench_encodes_images_with_an_rn50() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let rn50 = [
        "bench",
        "--geometry",
        "rn50",
        "--steps",
        "1",
        "--warmup",
        "0",
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_mocoop"))
        .args(rn50)
        .args(["--batch", "1", "--cases", "encode-image", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let case = &report["cases"][0];
    assert_eq!(
        (&case["case"], &case["geometry"]),
        (&"encode-image".into(), &"rn50".into())
    );
    for case in ["train-ln", "train-maple"] {
        let output = Command::new(env!("CARGO_BIN_EXE_mocoop"))
            .args(rn50)
            .args(["--cases", case])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let refused = format!(
            "{case} needs a ViT image tower (LayerNorms to tune, or layers to prompt), and the \
             rn50 geometry's is a ResNet"
        );
        assert!(stderr.contains(&refused), "{stderr}");
    }
}
