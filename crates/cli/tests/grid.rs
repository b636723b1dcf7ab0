//! Protocol grids through the `mocoop` binary on the miniature dataset: several methods in one
//! table, several processes sharing one grid through the cells' lock files, one cell at a time
//! (`--cell N`, what each Slurm task runs), `--collect`, and the Slurm script (`--slurm --print`;
//! `scripts/test-slurm.sh` runs it on a real Slurm).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::common::*;

/// stdout of a successful run.
fn stdout_of(output: std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mocoop failed:\n{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The cells a run's log says it trained.
fn trained_cells(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(": training ("))
        .map(|l| {
            l.split("] ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn config_of(cell: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(cell.join("config.json")).unwrap()).unwrap()
}

#[test]
fn protocol_compares_methods_in_one_table_each_with_its_recipe() {
    let dir = scratch("grid-methods");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let (root, out) = (root.to_str().unwrap(), dir.join("grid"));
    let out_s = out.to_str().unwrap();
    let args = protocol_args(root, out_s, "1,2", &["--methods", "coop,mocoop"]);
    let md = stdout_of(mocoop(&args));
    assert!(
        md.contains("| Dataset | Method | Base | New | HM |"),
        "{md}"
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| dtd |")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(rows[0].starts_with("| dtd | coop |") && rows[1].starts_with("| dtd | mocoop |"));
    assert_eq!(
        std::fs::read_to_string(out.join("results-base2new.md")).unwrap(),
        md.trim_end().to_string() + "\n"
    );
    // Each method trained with its own recipe (LN tuning is MoCoOp's, not CoOp's).
    let coop = config_of(&out.join("coop/dtd/shots8-seed1"));
    let mixture = config_of(&out.join("mocoop/dtd/shots8-seed2"));
    assert_eq!(
        (coop["method"].as_str(), coop["ln_tuning"].as_bool()),
        (Some("coop"), Some(false))
    );
    assert_eq!(
        (mixture["method"].as_str(), mixture["ln_tuning"].as_bool()),
        (Some("mocoop"), Some(true))
    );
    let summary = std::fs::read_to_string(out.join("report-base2new/summary.md")).unwrap();
    assert!(
        summary.contains("## All methods") && summary.contains("| dtd | mocoop |"),
        "{summary}"
    );

    // `--method` alone is one method's grid: the same runs, reused, and that method's table.
    let single = [
        &protocol_args(root, out_s, "1,2", &[])[..],
        &["--method", "coop"],
    ]
    .concat();
    let again = mocoop(&single);
    let log = String::from_utf8_lossy(&again.stderr).into_owned();
    let table = stdout_of(again);
    assert_eq!(log.matches("done before").count(), 2, "{log}");
    let coop_md = std::fs::read_to_string(out.join("results-base2new-coop.md")).unwrap();
    assert_eq!(table.trim_end(), coop_md.trim_end());
    assert!(table.contains("| Dataset | Base | New | HM |"), "{table}");

    // A flag that one of the methods does not read is refused, naming it; so is --method with
    // --methods.
    let top_k = [&args[..], &["--top-k", "1"]].concat();
    let err = failure(mocoop(&top_k));
    assert!(
        err.contains("--top-k does not apply to --method coop"),
        "{err}"
    );
    let both = [&args[..], &["--method", "coop"]].concat();
    let err = failure(mocoop(&both));
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn two_processes_share_one_grid_and_train_every_cell_once() {
    let dir = scratch("grid-shared");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let (root, out) = (root.to_str().unwrap(), dir.join("grid"));
    let args = protocol_args(
        root,
        out.to_str().unwrap(),
        "1,2,3,4",
        &["--method", "coop", "--stale-after", "10"],
    );
    let children = [spawn(&args), spawn(&args)];
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let logs: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    let mut trained: Vec<String> = logs.iter().flat_map(|l| trained_cells(l)).collect();
    trained.sort();
    let expected: Vec<String> = (1..=4)
        .map(|s| format!("coop dtd shots 8 seed {s}"))
        .collect();
    assert_eq!(
        trained, expected,
        "each cell trained exactly once:\n{}\n---\n{}",
        logs[0], logs[1]
    );
    let tables: Vec<String> = outputs.into_iter().map(stdout_of).collect();
    assert_eq!(tables[0], tables[1]);
    assert!(tables[0].contains("| dtd |"), "{}", tables[0]);
    for seed in 1..=4 {
        let epochs = metrics(&out.join(format!("coop/dtd/shots8-seed{seed}")));
        assert_eq!(epochs.len(), 2, "seed {seed}: {epochs:?}");
    }
    let left: Vec<_> = std::fs::read_dir(out.join("claims")).unwrap().collect();
    assert!(left.is_empty(), "no claim outlives its cell: {left:?}");
}

/// A lock file of cell `name` held by `host`, its heartbeat `age` old.
fn lock(out: &Path, name: &str, host: &str, age: Duration) {
    let path = out.join("claims").join(format!("{name}.lock"));
    let claimer = json!({"host": host, "pid": 4242, "token": format!("{host}-4242-0-0")});
    std::fs::write(&path, claimer.to_string()).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn cells_run_one_at_a_time_and_a_dead_claimers_cell_is_taken_over_and_resumed() {
    let dir = scratch("grid-cells");
    let root = dir.join("data");
    make_dataset(&root, &CLASSES);
    let (root, out) = (root.to_str().unwrap(), dir.join("grid"));
    let args = protocol_args(root, out.to_str().unwrap(), "1,2", &["--method", "coop"]);
    let with = |extra: &[&'static str]| {
        let mut all = args.clone();
        all.extend_from_slice(extra);
        all
    };

    // One cell (what a Slurm task runs): no table while another cell is missing.
    assert_eq!(stdout_of(mocoop(&with(&["--cell", "1"]))), "");
    let err = failure(mocoop(&with(&["--cell", "2"])));
    assert!(err.contains("the grid has 2 cells"), "{err}");
    let err = failure(mocoop(&with(&["--collect"])));
    assert!(
        err.contains("1 of 2 cells are not finished")
            && err.contains("cell 0, coop dtd shots 8 seed 1: not started"),
        "{err}"
    );

    // Cell 1 killed after its first epoch, its claimer dead (an hour-old heartbeat); cell 0 held
    // by a live process elsewhere.
    let cell = out.join("coop/dtd/shots8-seed2");
    for file in [
        "results.json",
        "checkpoint.safetensors",
        "checkpoints/epoch-002.safetensors",
    ] {
        std::fs::remove_file(cell.join(file)).unwrap();
    }
    let first_epoch = cell.join("checkpoints/epoch-001.safetensors");
    let written = std::fs::metadata(&first_epoch).unwrap().modified().unwrap();
    lock(
        &out,
        "coop.dtd.shots8-seed2",
        "node7",
        Duration::from_secs(3600),
    );
    lock(&out, "coop.dtd.shots8-seed1", "node8", Duration::ZERO);
    let err = failure(mocoop(&with(&["--collect"])));
    assert!(
        err.contains("cell 0, coop dtd shots 8 seed 1: running (node8 pid 4242"),
        "{err}"
    );
    assert!(
        err.contains("cell 1, coop dtd shots 8 seed 2: its claimer died (node7"),
        "{err}"
    );
    let held = mocoop(&with(&["--cell", "0"]));
    let log = String::from_utf8_lossy(&held.stderr).into_owned();
    assert!(
        held.status.success() && log.contains("another process trains it"),
        "{log}"
    );

    // The Slurm script runs the two unfinished cells, each with this command line and --cell.
    let script = stdout_of(mocoop(&with(&[
        "--slurm",
        "--print",
        "--partition",
        "debug",
    ])));
    assert!(
        script.contains("#SBATCH --array=0-1\n") && script.contains("#SBATCH --partition=debug\n"),
        "{script}"
    );
    let exec = script.lines().find(|l| l.starts_with("exec ")).unwrap();
    assert!(
        exec.contains(" protocol base2new ") && exec.ends_with("--cell \"$SLURM_ARRAY_TASK_ID\""),
        "{exec}"
    );
    assert!(
        !exec.contains("--slurm") && !exec.contains("--partition"),
        "{exec}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("slurm-base2new.sbatch")).unwrap(),
        script
    );

    // The live claimer finishes (its lock goes); a plain run trains cell 0, takes cell 1 over and
    // resumes it from its checkpoint; --collect then writes the same table.
    std::fs::remove_file(out.join("claims/coop.dtd.shots8-seed1.lock")).unwrap();
    let run = mocoop(&args);
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    let table = stdout_of(run);
    assert_eq!(trained_cells(&log).len(), 2, "{log}");
    let kept = std::fs::metadata(&first_epoch).unwrap().modified().unwrap();
    assert_eq!(written, kept, "the finished epoch was trained again");
    assert!(cell.join("checkpoints/epoch-002.safetensors").is_file());
    assert_eq!(stdout_of(mocoop(&with(&["--collect"]))), table);
}
