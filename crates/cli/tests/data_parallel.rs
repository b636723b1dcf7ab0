//! Training on several devices through the `mocoop` binary: `--device cpu,cpu` runs burn-train's
//! multi-device strategy with two workers, each given half of every batch, and with
//! `--split classes` one step whose prompts are encoded half on each device. The CPU backend has a
//! single device, which both workers share, so these tests check the code path (batch parts, loss
//! weights, summed gradients, step counting, checkpoints, resuming) and not a speed-up; runs on
//! several GPUs go through the same code with other devices.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

const TWO: [&str; 2] = ["--device", "cpu,cpu"];

/// The largest difference between two runs' trained tensors, which must have the same names.
fn max_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (trained(a), trained(b));
    assert_eq!(
        a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        b.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    a.iter()
        .zip(&b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// The largest magnitude among a run's trained tensors: the scale differences are judged by.
fn largest_value(run: &Path) -> f32 {
    trained(run)
        .iter()
        .flat_map(|(_, x)| x.iter().map(|v| v.abs()))
        .fold(0.0, f32::max)
}

/// Asserts that two runs' epoch logs agree to `tolerance` (relative) in every mean.
fn assert_logs_close(a: &Path, b: &Path, tolerance: f64) {
    let (a, b) = (metrics(a), metrics(b));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        let (mx, my) = (
            x["means"].as_object().unwrap(),
            y["means"].as_object().unwrap(),
        );
        assert_eq!(mx.keys().collect::<Vec<_>>(), my.keys().collect::<Vec<_>>());
        for (key, vx) in mx {
            let (vx, vy) = (vx.as_f64().unwrap(), my[key].as_f64().unwrap());
            let scale = vx.abs().max(1.0);
            assert!(
                (vx - vy).abs() <= tolerance * scale,
                "epoch {}: {key} {vx} vs {vy}",
                x["epoch"]
            );
        }
    }
}

fn accuracy(out: &Value) -> f64 {
    split(&out["results"], "all")["accuracy"].as_f64().unwrap()
}

/// Trains the same run on one device and on two workers (with `extra` flags on both) and checks
/// that they agree: same steps, prompts equal up to floating-point summation order, same epoch
/// averages and test accuracy. Gradient clipping is off: it would hide gradients of the wrong
/// scale. Returns what the one-device and the two-device run printed on stderr.
fn assert_two_workers_match_one(name: &str, extra: &[&str]) -> (String, String) {
    let extra: Vec<&str> = ["--clip-norm", "0"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let dir = scratch(name);
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root = root.to_str().unwrap();
    let (one, two) = (dir.join("one"), dir.join("two"));
    let with_two: Vec<&str> = extra.iter().copied().chain(TWO).collect();
    let one_run = mocoop(&run_args_with(root, one.to_str().unwrap(), &extra));
    let one_notes = String::from_utf8_lossy(&one_run.stderr).into_owned();
    let one_out = ok(one_run);
    let two_run = mocoop(&run_args_with(root, two.to_str().unwrap(), &with_two));
    let notes = String::from_utf8_lossy(&two_run.stderr).into_owned();
    let two_out = ok(two_run);

    assert_eq!(one_out["steps"], 96);
    assert_eq!(two_out["steps"], 96, "a step counted once per worker?");
    let difference = max_difference(&one, &two);
    let scale = largest_value(&one);
    assert!(
        difference <= 1e-4 * scale.max(1.0),
        "two workers trained other prompts: max difference {difference} (values up to {scale})"
    );
    assert_logs_close(&one, &two, 1e-4);
    assert_eq!(accuracy(&one_out), accuracy(&two_out));
    (one_notes, notes)
}

#[test]
fn two_workers_train_what_one_device_trains() {
    // Batches of 2: each worker gets one image of every step, with router noise and tuned
    // LayerNorms; 8 shots of 4 classes make 16 steps an epoch.
    let (_, notes) = assert_two_workers_match_one("dp-images", &[]);
    assert!(!notes.contains("prompts were encoded on"), "{notes}");
}

#[test]
fn two_devices_sharing_the_prompts_train_what_one_device_trains() {
    // --split classes: the first device runs the step and each device encodes half of the
    // prompts (here on the CPU's one device, so the path is checked, not a speed-up).
    let (one, notes) = assert_two_workers_match_one("dp-classes", &["--split", "classes"]);
    assert!(
        one.contains("the prompts were not split by class: there was one device"),
        "{one}"
    );
    // DTD's 5 template groups (experts) for the 4 classes: 20 prompts, shared by tokens. The
    // first experts' prompts are the shorter ones, so the first device takes more of them.
    assert!(
        notes.contains(
            "each step's 20 prompts were encoded on 2 devices, in shares of 12, 8 prompts \
             (about equal in tokens)"
        ),
        "{notes}"
    );
}

#[test]
fn two_workers_split_cached_features_too() {
    assert_two_workers_match_one(
        "dp-cached",
        &["--ln-tuning", "false", "--cached-views", "2"],
    );
}

#[test]
fn an_interrupted_two_worker_run_resumes_to_the_same_result() {
    let dir = scratch("dp-resume");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root = root.to_str().unwrap();
    let reference = dir.join("reference");
    ok(mocoop(&run_args_with(
        root,
        reference.to_str().unwrap(),
        &TWO,
    )));

    let run = dir.join("interrupted");
    let run_s = run.to_str().unwrap();
    let output = interrupt_in_epoch_3(spawn(&run_args_with(root, run_s, &TWO)), &run);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let (moved, classes) = (dir.join("moved"), dir.join("classes"));
    copy_dir(&run, &moved);
    copy_dir(&run, &classes);
    let resume = |run: &Path, more: &[&str]| {
        let args = ["train", "--resume", run.to_str().unwrap(), "--quiet"];
        ok(mocoop(&[&args[..], more].concat()))
    };
    resume(&run, &TWO);

    // Two partial gradients add up the same in either order, so the prompts are bit-identical;
    // the epoch averages are summed in the order the workers finish.
    assert_eq!(max_difference(&reference, &run), 0.0);
    assert_logs_close(&reference, &run, 1e-12);

    // The same checkpoint continued on one device ends where the two workers did, up to rounding.
    // So does it with the prompts, not the batches, shared between two devices.
    resume(&moved, &["--device", "cpu"]);
    resume(&classes, &[&TWO[..], &["--split", "classes"]].concat());
    for other in [moved, classes] {
        let difference = max_difference(&reference, &other);
        assert!(
            difference <= 1e-4 * largest_value(&reference).max(1.0),
            "{}: {difference}",
            other.display()
        );
        assert_logs_close(&reference, &other, 1e-4);
    }
}

#[test]
fn more_devices_than_images_per_batch_is_a_clear_error() {
    let dir = scratch("dp-too-many");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let out = dir.join("run");
    let err = failure(mocoop(&run_args_with(
        root.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--device", "cpu,cpu,cpu"],
    )));
    assert!(err.contains("3 devices need a batch size"), "{err}");
    let mixed = failure(mocoop(&run_args_with(
        root.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--device", "cpu,wgpu"],
    )));
    assert!(mixed.contains("mix backends"), "{mixed}");
}
