//! The benchmark's output: one record per case, the machine it ran on, a table and JSON. The
//! PyTorch reference writes the same schema, so `bench/reference/compare.py` can pair them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One measured case (the JSON schema shared with the PyTorch reference).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Case name (`train-ln`, `train-no-ln`, `train-imagenet`, `infer-cached`, `encode-image`).
    pub case: String,
    /// Model size.
    pub geometry: String,
    /// Backend and device.
    pub device: String,
    /// Experts `E`.
    pub experts: usize,
    /// Classes `C`.
    pub classes: usize,
    /// Images per step.
    pub batch: usize,
    /// Whether the image LayerNorms train.
    pub ln_tuning: bool,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Images per second.
    pub images_per_s: f64,
    /// Milliseconds per step (per inference batch).
    pub ms_per_step: f64,
    /// Peak resident memory of the process that ran only this case, MiB (`None`: not
    /// measurable on this system).
    pub peak_rss_mib: Option<f64>,
    /// Peak device memory, MiB, on GPU backends where it can be read.
    pub device_mem_mib: Option<f64>,
    /// Why a memory figure is missing or what it means.
    pub memory_note: Option<String>,
    /// How the case deviates from its definition, if it does.
    pub note: Option<String>,
    /// Sub-part timings in milliseconds (with `--breakdown`), as `[name, ms]` pairs.
    pub breakdown: Vec<(String, f64)>,
}

/// A whole benchmark run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Which implementation measured (`mocoop-burn` here, `pytorch` for the reference).
    pub implementation: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// CPU, cores, memory and OS.
    pub machine: String,
    /// Compute threads the CPU backend may use.
    pub threads: usize,
    /// Precision of the encoders' compute (`f32`, `f16`, `bf16`; the reference says `amp` when
    /// it autocasts).
    #[serde(default)]
    pub precision: String,
    /// The cases.
    pub cases: Vec<CaseRecord>,
}

/// Peak resident set size of this process in MiB (`VmHWM`), where the OS tells (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Threads of the CPU backend's pool: `RAYON_NUM_THREADS` when set, else the logical cores.
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// A one-line description of the machine: CPU model, logical cores, memory, OS.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, v)| v.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB RAM", kib / 1024.0 / 1024.0)
        });
    format!(
        "{cpu}, {cores} logical cores{memory}, {}",
        std::env::consts::OS
    )
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days on the Unix clock; no date library needed).
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}"))
}

/// The readable table, with each case's note and breakdown below it.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "mocoop bench, {} · {} · {} CPU threads · {}\n\n",
        report.date, report.machine, report.threads, report.precision
    );
    out.push_str(&format!(
        "{:<15} {:<9} {:<8} {:>4} {:>5} {:>5} {:>3} {:>10} {:>11} {:>9} {:>9}\n",
        "case",
        "geometry",
        "device",
        "E",
        "C",
        "batch",
        "LN",
        "images/s",
        "ms/step",
        "RSS MiB",
        "dev MiB"
    ));
    for c in &report.cases {
        out.push_str(&format!(
            "{:<15} {:<9} {:<8} {:>4} {:>5} {:>5} {:>3} {:>10.2} {:>11.1} {:>9} {:>9}\n",
            c.case,
            c.geometry,
            c.device,
            c.experts,
            c.classes,
            c.batch,
            if c.ln_tuning { "on" } else { "off" },
            c.images_per_s,
            c.ms_per_step,
            mib(c.peak_rss_mib),
            mib(c.device_mem_mib),
        ));
    }
    for c in &report.cases {
        for note in c.note.iter().chain(&c.memory_note) {
            out.push_str(&format!("\n{}: {note}", c.case));
        }
        for (name, ms) in &c.breakdown {
            out.push_str(&format!("\n{}: {name}: {ms:.1} ms", c.case));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        let date = super::today();
        assert_eq!(date.len(), 10);
        assert!(date.as_str() >= "2024-01-01", "{date}");
    }
}
