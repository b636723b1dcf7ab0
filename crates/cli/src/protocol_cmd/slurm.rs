//! `mocoop protocol … --slurm`: the grid as a Slurm job array. The sbatch script
//! (`OUT/slurm-<protocol>.sbatch`) has one array task per cell not yet finished, each running
//! this same command line with `--cell N` against the same folder (where the cells' lock files
//! keep any two tasks, or a task and a plain `mocoop protocol`, from training one cell twice),
//! its output in `OUT/logs/cell-N.log`. Submitting it again after tasks died (`scancel`, a time
//! limit, a node failure) runs only the unfinished cells, resuming each from its checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::ProtocolArgs;
use super::cell::Cells;

/// The Slurm options of `mocoop protocol`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SlurmArgs {
    /// Submit the grid to Slurm with sbatch, as a job array of one task per unfinished cell, each
    /// running this command with --cell N (OUT and the mocoop binary must be on a filesystem the
    /// nodes share).
    #[arg(long)]
    pub slurm: bool,
    /// The Slurm partition (sbatch --partition).
    #[arg(long, requires = "slurm", value_name = "P")]
    partition: Option<String>,
    /// GPUs per task (sbatch --gpus-per-task).
    #[arg(long, requires = "slurm", value_name = "N")]
    gpus_per_task: Option<u32>,
    /// Time limit per task (sbatch --time, e.g. 4:00:00).
    #[arg(long, requires = "slurm", value_name = "T")]
    time: Option<String>,
    /// Any other sbatch option, written as an #SBATCH line (repeatable: --sbatch-arg=--mem=32G).
    #[arg(
        long = "sbatch-arg",
        requires = "slurm",
        allow_hyphen_values = true,
        value_name = "ARG"
    )]
    sbatch_args: Vec<String>,
    /// Write the script and print it, without submitting it.
    #[arg(long, requires = "slurm")]
    print: bool,
}

/// The Slurm flags taking a value, which the tasks' command line leaves out.
const VALUED: [&str; 4] = ["--partition", "--gpus-per-task", "--time", "--sbatch-arg"];

/// `args` without the Slurm flags (`--slurm`, `--print` and the valued ones, in both the
/// `--flag value` and `--flag=value` spellings).
pub fn without_slurm_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        if arg == "--slurm" || arg == "--print" {
            continue;
        }
        if VALUED.contains(&flag) {
            skip_value = !arg.contains('=');
            continue;
        }
        out.push(arg.clone());
    }
    out
}

/// `arg` as one shell word.
fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `0-3,5,7-8`: the cell numbers as Slurm's --array ranges.
fn ranges(cells: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cells.len() {
        let mut j = i;
        while j + 1 < cells.len() && cells[j + 1] == cells[j] + 1 {
            j += 1;
        }
        parts.push(match i == j {
            true => cells[i].to_string(),
            false => format!("{}-{}", cells[i], cells[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Where cell `index`'s Slurm task writes its output.
pub fn log_path(out: &Path, index: usize) -> PathBuf {
    out.join("logs").join(format!("cell-{index}.log"))
}

/// This process's log, when it is a task of the job array.
pub fn own_log(out: &Path) -> Option<PathBuf> {
    let index = std::env::var("SLURM_ARRAY_TASK_ID").ok()?.parse().ok()?;
    Some(log_path(out, index))
}

/// What the script is made of.
pub struct Script<'a> {
    /// The job's name.
    pub name: String,
    /// The cells to run, ascending.
    pub cells: &'a [usize],
    /// The grid's folder (absolute).
    pub out: &'a Path,
    /// The folder the tasks start in (where relative paths of the command line point from).
    pub workdir: &'a Path,
    /// The mocoop binary and its arguments without the Slurm flags.
    pub command: &'a [String],
}

impl SlurmArgs {
    /// The sbatch script.
    pub fn script(&self, s: &Script) -> String {
        let mut lines = vec![
            "#!/bin/bash".to_string(),
            "# Written by `mocoop protocol --slurm`: one array task per unfinished cell of the grid,"
                .into(),
            "# each running one cell (--cell N, claimed with a lock file in OUT/claims).".into(),
            format!("#SBATCH --job-name={}", s.name),
            format!("#SBATCH --array={}", ranges(s.cells)),
            format!("#SBATCH --output={}", s.out.join("logs/cell-%a.log").display()),
            "#SBATCH --open-mode=append".into(),
            format!("#SBATCH --chdir={}", s.workdir.display()),
        ];
        if let Some(p) = &self.partition {
            lines.push(format!("#SBATCH --partition={p}"));
        }
        if let Some(n) = self.gpus_per_task {
            lines.push(format!("#SBATCH --gpus-per-task={n}"));
        }
        if let Some(t) = &self.time {
            lines.push(format!("#SBATCH --time={t}"));
        }
        lines.extend(self.sbatch_args.iter().map(|a| format!("#SBATCH {a}")));
        let words: Vec<String> = s.command.iter().map(|w| quote(w)).collect();
        lines.push(format!(
            "exec {} --cell \"$SLURM_ARRAY_TASK_ID\"",
            words.join(" ")
        ));
        lines.join("\n") + "\n"
    }
}

/// This command line, without the Slurm flags, starting with the binary's absolute path.
fn task_command() -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("finding the mocoop binary")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut command = vec![exe.display().to_string()];
    command.extend(without_slurm_flags(&args));
    Ok(command)
}

/// Writes the script for the unfinished cells, and submits it unless `--print`.
pub fn submit(args: &ProtocolArgs) -> Result<()> {
    let grid = args.grid()?;
    let cells = Cells { args, grid: &grid };
    let mut pending = Vec::new();
    for cell in grid.cells() {
        if cells.finished(&cell)?.is_none() {
            pending.push(cell.index);
        }
    }
    let command = task_command()?;
    let collect = [&command[..], &["--collect".to_string()]].concat();
    let collect: Vec<String> = collect.iter().map(|w| quote(w)).collect();
    if pending.is_empty() {
        eprintln!("every cell is finished; the tables: {}", collect.join(" "));
        return Ok(());
    }
    std::fs::create_dir_all(args.out.join("logs"))?;
    let out = std::path::absolute(&args.out)?;
    let workdir = std::env::current_dir()?;
    let name = format!("mocoop-{}", grid.protocol.name());
    let script = args.slurm.script(&Script {
        name,
        cells: &pending,
        out: &out,
        workdir: &workdir,
        command: &command,
    });
    let path = out.join(format!("slurm-{}.sbatch", grid.protocol.name()));
    std::fs::write(&path, &script).with_context(|| format!("writing {}", path.display()))?;
    if args.slurm.print {
        print!("{script}");
        eprintln!("wrote {} (submit it with: sbatch {0})", path.display());
        return Ok(());
    }
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .context("running sbatch (is Slurm installed here?)")?;
    if !output.status.success() {
        bail!(
            "sbatch {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let job = stdout.trim().split(';').next().unwrap_or("").to_string();
    println!("{job}");
    eprintln!(
        "submitted job {job}: {} array task{}, one per unfinished cell ({})\n\
         follow it: squeue -j {job}; each task's output: {}\n\
         once it is done: {}",
        pending.len(),
        if pending.len() == 1 { "" } else { "s" },
        path.display(),
        out.join("logs/cell-N.log").display(),
        collect.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_tasks_command_line_leaves_out_the_slurm_flags() {
        let args = strings(&[
            "protocol",
            "base2new",
            "--slurm",
            "--partition",
            "gpu",
            "--time=1:00:00",
            "--sbatch-arg",
            "--mem=8G",
            "--print",
            "--seeds",
            "1,2",
            "--gpus-per-task",
            "1",
            "--out",
            "runs/b2n",
        ]);
        assert_eq!(
            without_slurm_flags(&args),
            strings(&[
                "protocol", "base2new", "--seeds", "1,2", "--out", "runs/b2n"
            ])
        );
    }

    #[test]
    fn the_script_has_one_task_per_cell_and_every_option() {
        let slurm = SlurmArgs {
            slurm: true,
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            time: Some("4:00:00".into()),
            sbatch_args: strings(&["--mem=32G", "--cpus-per-task=8"]),
            print: false,
        };
        let command = strings(&[
            "/opt/bin/mocoop",
            "protocol",
            "base2new",
            "--hand-made",
            "a {}.",
        ]);
        let script = slurm.script(&Script {
            name: "mocoop-base2new".into(),
            cells: &[0, 1, 2, 3, 5, 7, 8],
            out: Path::new("/shared/b2n"),
            workdir: Path::new("/home/me"),
            command: &command,
        });
        let expected = "\
#!/bin/bash
# Written by `mocoop protocol --slurm`: one array task per unfinished cell of the grid,
# each running one cell (--cell N, claimed with a lock file in OUT/claims).
#SBATCH --job-name=mocoop-base2new
#SBATCH --array=0-3,5,7-8
#SBATCH --output=/shared/b2n/logs/cell-%a.log
#SBATCH --open-mode=append
#SBATCH --chdir=/home/me
#SBATCH --partition=gpu
#SBATCH --gpus-per-task=1
#SBATCH --time=4:00:00
#SBATCH --mem=32G
#SBATCH --cpus-per-task=8
exec /opt/bin/mocoop protocol base2new --hand-made 'a {}.' --cell \"$SLURM_ARRAY_TASK_ID\"
";
        assert_eq!(script, expected);
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(ranges(&[4]), "4");
    }
}
