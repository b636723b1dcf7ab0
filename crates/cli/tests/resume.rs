//! Interrupted training through the `mocoop` binary: runs killed with SIGKILL at random points (and
//! a damaged newest checkpoint), or stopped with SIGINT, are continued with `train --resume` and
//! must end with exactly the prompts, epoch log and test results of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Training flags of every run here: 6 epochs of 16 steps, router noise on (so its seeding
/// matters), LayerNorm tuning on (the MoCoOp default), evaluation at the end.
const EPOCHS: usize = 6;

fn run_args<'a>(root: &'a str, out: &'a str) -> Vec<&'a str> {
    run_args_with(root, out, &[])
}

/// The checkpoint in `run/checkpoints` with the most steps.
fn newest_checkpoint(run: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(run.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .max_by_key(|p| {
            mocoop_train::checkpoint::read(p)
                .ok()
                .and_then(|c| c.metadata.get("resume").cloned())
                .and_then(|r| serde_json::from_str::<Value>(&r).ok())
                .and_then(|r| r["step"].as_u64())
                .unwrap_or(0)
        })
}

/// A small deterministic generator, so that a failure can be reproduced.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn uninterrupted(dir: &Path, root: &str) -> (PathBuf, Value) {
    uninterrupted_with(dir, root, &[])
}

fn uninterrupted_with(dir: &Path, root: &str, extra: &[&str]) -> (PathBuf, Value) {
    let run = dir.join("reference");
    let out = ok(mocoop(&run_args_with(root, run.to_str().unwrap(), extra)));
    (run, out)
}

fn assert_same_run(reference: &Path, resumed: &Path) {
    let (a, b) = (trained(reference), trained(resumed));
    let names = |t: &[(String, Vec<f32>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    let differing: Vec<&str> = a
        .iter()
        .zip(&b)
        .filter(|((_, x), (_, y))| x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits()))
        .map(|((name, _), _)| name.as_str())
        .collect();
    assert!(
        differing.is_empty(),
        "resumed tensors differ: {differing:?}"
    );
    let (a, b) = (metrics(reference), metrics(resumed));
    assert_eq!(a.len(), EPOCHS);
    assert_eq!(a, b, "epoch logs differ");
    let results = |run: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap()
    };
    assert_eq!(results(reference), results(resumed));
}

#[test]
fn runs_killed_at_random_points_resume_to_the_uninterrupted_result() {
    let dir = scratch("resume-kill");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let (reference, _) = uninterrupted(&dir, root_s);

    let run = dir.join("killed");
    let run_s = run.to_str().unwrap();
    let resume = ["train", "--resume", run_s];
    let mut rng = Lcg(20_261_125);
    let mut kills = 0;
    let mut expect_damaged = false;
    let mut child = spawn(&run_args(root_s, run_s));
    loop {
        // Kill inside an epoch this process has yet to reach: after the checkpoint of the epoch
        // before appears, plus a random part of an epoch. Near the end, let the run finish.
        let on_disk = epochs_checkpointed(&run);
        let target = on_disk + 1 + rng.below(2) as usize;
        let running = target < EPOCHS && wait_for_epoch(&mut child, &run, target);
        if running {
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            child.kill().unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The process may have finished just before the kill.
        let killed = running && output.status.code().is_none();
        if expect_damaged {
            assert!(
                stderr.contains("passing over a damaged checkpoint"),
                "the damaged checkpoint was not reported:\n{stderr}"
            );
            expect_damaged = false;
        }
        if !killed {
            assert!(output.status.success(), "resume failed:\n{stderr}");
            break;
        }
        kills += 1;
        if kills == 2 {
            // A checkpoint damaged on disk is detected and the previous good one is used.
            let newest = newest_checkpoint(&run).expect("a checkpoint");
            let mut bytes = std::fs::read(&newest).unwrap();
            let near_end = bytes.len() - 10;
            bytes[near_end] ^= 0x40;
            std::fs::write(&newest, bytes).unwrap();
            expect_damaged = true;
        }
        child = spawn(&resume);
    }
    assert!(kills >= 2, "only {kills} kills landed before the run ended");
    assert_same_run(&reference, &run);

    // Resuming a finished run changes nothing and says so.
    let out = mocoop(&resume);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already finished"));
    assert_same_run(&reference, &run);

    // A damaged final checkpoint: `eval` falls back to the last epoch's checkpoint (same tensors)
    // with a warning, and `--resume` writes the final checkpoint again.
    let expected = ok(mocoop(&["eval", "--run", run_s, "--workers", "1"]));
    let final_path = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&final_path).unwrap();
    std::fs::write(&final_path, &bytes[..bytes.len() / 2]).unwrap();
    let out = mocoop(&["eval", "--run", run_s, "--workers", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(ok(out), expected);
    ok(mocoop(&resume));
    assert_same_run(&reference, &run);
}

#[test]
fn sigint_stops_after_a_step_with_a_checkpoint_and_the_run_resumes() {
    let dir = scratch("resume-sigint");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let (reference, _) = uninterrupted(&dir, root_s);

    let run = dir.join("interrupted");
    let run_s = run.to_str().unwrap();
    let output = interrupt_in_epoch_3(spawn(&run_args(root_s, run_s)), &run);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted after step"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(!run.join("checkpoint.safetensors").exists());

    // Flags that would change the run are refused with --resume.
    let refused = failure(mocoop(&["train", "--resume", run_s, "--epochs", "9"]));
    assert!(
        refused.contains("--epochs cannot be combined with --resume"),
        "{refused}"
    );

    // A checkpoint with a valid digest but unreadable optimiser state (a crafted file) is a clear
    // error, not a panic.
    let tampered = dir.join("tampered");
    copy_dir(&run, &tampered);
    let newest = newest_checkpoint(&tampered).expect("a checkpoint");
    let saved = mocoop_train::checkpoint::read(&newest).unwrap();
    let tensors: Vec<_> = saved.tensors.into_iter().collect();
    let blobs = [("state.optimizer".to_string(), b"not an optimiser".to_vec())];
    mocoop_train::checkpoint::write(&newest, &tensors, &blobs, saved.metadata).unwrap();
    let err = failure(mocoop(&["train", "--resume", tampered.to_str().unwrap()]));
    assert!(err.contains("optimiser state"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    ok(mocoop(&["train", "--resume", run_s, "--quiet"]));
    assert_same_run(&reference, &run);
}

#[test]
fn an_f16_run_resumes_with_its_loss_scale() {
    // The loss scale falls from 2^16 over the first steps (they are skipped); a resumed run that
    // forgot it would skip steps again and end elsewhere.
    let f16 = ["--precision", "f16"];
    let dir = scratch("resume-f16");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let (reference, _) = uninterrupted_with(&dir, root_s, &f16);
    let scale = metrics(&reference)[EPOCHS - 1]["means"]["loss_scale"]
        .as_f64()
        .unwrap();
    assert!(scale < 65536.0, "the scale never came down: {scale}");

    let run = dir.join("interrupted");
    let run_s = run.to_str().unwrap();
    let output = interrupt_in_epoch_3(spawn(&run_args_with(root_s, run_s, &f16)), &run);
    assert_eq!(output.status.code(), Some(130));
    ok(mocoop(&["train", "--resume", run_s, "--quiet"]));
    assert_same_run(&reference, &run);
}

/// A run of `flags` interrupted in its third epoch (Ctrl-C) and resumed ends with the
/// uninterrupted run's tensors, logs and results, bit for bit (`name` names its scratch folder).
fn interrupted_run_resumes_identically(name: &str, flags: &[&str]) {
    let dir = scratch(&format!("resume-{name}"));
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let root_s = root.to_str().unwrap();
    let (reference, _) = uninterrupted_with(&dir, root_s, flags);
    let run = dir.join("interrupted");
    let run_s = run.to_str().unwrap();
    let output = interrupt_in_epoch_3(spawn(&run_args_with(root_s, run_s, flags)), &run);
    assert_eq!(output.status.code(), Some(130), "{name}");
    ok(mocoop(&["train", "--resume", run_s, "--quiet"]));
    assert_same_run(&reference, &run);
}

/// CoCoOp trains a meta-net beside its context, ProGrad steps twice per update (its projection),
/// KgCoOp adds a term and LASP trains the text bias and image LayerNorms with its text loss: an
/// interrupted run of each resumes to the uninterrupted run's tensors, logs and results, bit for
/// bit.
#[test]
fn cocoop_kgcoop_prograd_and_lasp_runs_resume_bit_identically() {
    for method in ["cocoop", "kgcoop", "prograd", "lasp"] {
        interrupted_run_resumes_identically(method, &["--method", method, "--lr", "0.016"]);
    }
}

/// An interrupted deep-prompt run resumes to the uninterrupted run's tensors, logs and results,
/// bit for bit: MaPLe learns tokens inside both encoders and the couplings between them, IVLP
/// independent tokens in each. (Their thread parts once lost a prompt's gradient now and then,
/// autodiff graphs merging on one thread while another recorded: `clip::transformer`'s
/// `part_inputs`.)
#[test]
fn maple_and_ivlp_runs_resume_bit_identically() {
    for method in ["maple", "ivlp"] {
        let flags = ["--method", method, "--prompt-depth", "2", "--lr", "0.02"];
        interrupted_run_resumes_identically(method, &flags);
    }
}

/// A PromptSRC run interrupted in epoch 3 resumes to the same aggregate: the running sum of the
/// epochs' tokens travels in the checkpoints.
#[test]
fn promptsrc_run_resumes_bit_identically() {
    let flags = [
        "--method",
        "promptsrc",
        "--prompt-depth",
        "2",
        "--lr",
        "0.02",
        "--gpa-mean",
        "4",
        "--gpa-std",
        "2",
    ];
    interrupted_run_resumes_identically("promptsrc", &flags);
}
