//! The progress of a protocol grid. On a terminal: one overall bar (cells done, cells left, an ETA)
//! above the epoch bar of the cell being trained, with the log lines printed above both. Elsewhere
//! (CI, a log file): no bars, one line per cell (and mocoop-train's line per epoch).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The overall bar and what its ETA is estimated from.
pub struct GridProgress {
    multi: MultiProgress,
    overall: ProgressBar,
    total: usize,
    done: usize,
    /// Cells trained (not reused) so far, and the time they took.
    trained: (usize, Duration),
    started: Option<(Instant, bool)>,
}

impl GridProgress {
    /// Progress over `total` cells, drawn on stderr when it is a terminal.
    pub fn new(total: usize) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("cells [{bar:30}] {pos}/{len}  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let progress = Self {
            multi,
            overall,
            total,
            done: 0,
            trained: (0, Duration::ZERO),
            started: None,
        };
        progress.overall.set_message(progress.status());
        progress
    }

    /// The bars, for training to draw each cell's epoch bar under the overall one.
    pub fn bars(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Prints a line on stderr (above the bars when they are drawn).
    pub fn say(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    /// `done, left, ETA`: the ETA assumes the cells left take as long as those trained so far.
    fn status(&self) -> String {
        let left = self.total - self.done;
        let eta = match self.trained {
            (0, _) => "ETA after the first trained cell".to_string(),
            (n, time) => format!("ETA {}", duration(time / n as u32 * left as u32)),
        };
        format!("{} done, {left} left, {eta}", self.done)
    }

    /// Cell `what` starts; `train` says whether it trains (or reuses a finished run).
    pub fn begin(&mut self, what: &str, train: bool) {
        let action = if train { "training" } else { "done before" };
        self.say(&format!(
            "[{}/{}] {what}: {action} ({})",
            self.done + 1,
            self.total,
            self.status()
        ));
        self.started = Some((Instant::now(), train));
    }

    /// The cell begun last is finished.
    pub fn end(&mut self) {
        if let Some((start, true)) = self.started.take() {
            self.trained.0 += 1;
            self.trained.1 += start.elapsed();
        }
        self.done += 1;
        self.overall.set_position(self.done as u64);
        self.overall.set_message(self.status());
    }

    /// Removes the bars (the grid is done).
    pub fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

/// `1h02m`, `3m05s` or `12s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_mean_trained_cell_times_the_cells_left() {
        let mut progress = GridProgress::new(4);
        assert_eq!(
            progress.status(),
            "0 done, 4 left, ETA after the first trained cell"
        );
        progress.begin("dtd shots 1 seed 1", false);
        progress.end();
        assert_eq!(
            progress.status(),
            "1 done, 3 left, ETA after the first trained cell"
        );
        // A reused cell costs nothing; a trained one took 40 s (as if started 40 s ago).
        progress.begin("dtd shots 2 seed 1", true);
        progress.started = Some((Instant::now() - Duration::from_secs(40), true));
        progress.end();
        assert_eq!(progress.status(), "2 done, 2 left, ETA 1m20s");
        assert_eq!(duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
    }
}
