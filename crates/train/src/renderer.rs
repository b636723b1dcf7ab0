//! Live training display: a progress bar per epoch with the running metrics (on a terminal), and
//! one summary line per epoch (always, on stderr, unless quiet). Under a caller's
//! `MultiProgress` (`TrainOptions::progress`) the bar is drawn below the caller's bars and the
//! lines above them.

use std::collections::BTreeMap;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Default)]
struct Running {
    sum: f64,
    count: f64,
    text: Option<String>,
}

/// Progress bars and epoch summaries.
pub struct BarRenderer {
    names: Vec<(MetricId, String)>,
    /// Metric updates of the item being processed (merged when its progress arrives, so that the
    /// first item of an epoch is not counted in the previous one).
    pending: Vec<MetricState>,
    train: BTreeMap<String, Running>,
    valid: BTreeMap<String, Running>,
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    printed_epoch: usize,
    valid_epoch: usize,
    quiet: bool,
    under: Option<MultiProgress>,
}

impl BarRenderer {
    /// A renderer; `quiet` prints nothing; `under` holds the caller's bars, if any.
    pub fn new(quiet: bool, under: Option<MultiProgress>) -> Self {
        Self {
            names: Vec::new(),
            pending: Vec::new(),
            train: BTreeMap::new(),
            valid: BTreeMap::new(),
            bar: None,
            epoch: 0,
            epochs: 0,
            printed_epoch: 0,
            valid_epoch: 0,
            quiet,
            under,
        }
    }

    /// Prints a line on stderr (above the caller's bars, when they are drawn).
    fn line(&self, line: &str) {
        match &self.under {
            Some(multi) if !multi.is_hidden() => {
                let _ = multi.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }

    fn short(name: &str) -> &str {
        match name {
            "Loss" => "loss",
            "CE" => "ce",
            "Accuracy" => "acc",
            "Router entropy" => "H",
            "Learning rate" => "lr",
            "Expert load" => "load",
            other => other,
        }
    }

    fn summary(values: &BTreeMap<String, Running>) -> String {
        let order = [
            "Loss",
            "CE",
            "L_text",
            "L_gate",
            "L_lb",
            "L_kd",
            "Accuracy",
            "Router entropy",
            "Learning rate",
            "Expert load",
        ];
        order
            .iter()
            .filter_map(|name| values.get(*name).map(|r| (name, r)))
            .map(|(name, r)| {
                let value = match &r.text {
                    Some(text) => text.clone(),
                    None if *name == "Learning rate" => format!("{:.3e}", r.sum / r.count),
                    None if *name == "Accuracy" => format!("{:.1}%", r.sum / r.count),
                    None => format!("{:.4}", r.sum / r.count),
                };
                format!("{} {value}", Self::short(name))
            })
            .collect::<Vec<_>>()
            .join("  ")
    }

    fn record(&mut self, state: MetricState, valid: bool) {
        let (entry, numeric) = match state {
            MetricState::Generic(entry) => (entry, None),
            MetricState::Numeric(entry, numeric) => (entry, Some(numeric)),
        };
        let Some(name) = self
            .names
            .iter()
            .find(|(id, _)| *id == entry.metric_id)
            .map(|(_, n)| n.clone())
        else {
            return;
        };
        let map = if valid {
            &mut self.valid
        } else {
            &mut self.train
        };
        let running = map.entry(name).or_default();
        match numeric {
            Some(NumericEntry::Value(v)) => {
                running.sum += v;
                running.count += 1.0;
            }
            Some(NumericEntry::Aggregated {
                aggregated_value,
                count,
            }) => {
                running.sum += aggregated_value * count as f64;
                running.count += count as f64;
            }
            None => running.text = Some(entry.serialized_entry.formatted.clone()),
        }
    }

    fn end_epoch(&mut self) {
        if self.epoch == 0 || self.printed_epoch == self.epoch {
            return;
        }
        self.printed_epoch = self.epoch;
        let line = format!(
            "epoch {}/{}  {}",
            self.epoch,
            self.epochs,
            Self::summary(&self.train)
        );
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            self.line(&line);
        }
        self.train.clear();
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.pending.push(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state, true);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        self.epochs = item.global_progress.items_total;
        if epoch != self.epoch {
            self.end_epoch();
            self.epoch = epoch;
        }
        for state in std::mem::take(&mut self.pending) {
            self.record(state, false);
        }
        if self.quiet {
            return;
        }
        let Some(progress) = item.progress else {
            return;
        };
        let under = self.under.clone();
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(progress.items_total as u64);
            let bar = match under {
                Some(multi) => multi.add(bar),
                None => bar,
            };
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
        bar.set_position(progress.items_processed as u64);
        bar.set_message(Self::summary(&self.train));
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item
            .progress
            .is_some_and(|p| p.items_processed >= p.items_total);
        if done && epoch != self.valid_epoch {
            self.end_epoch();
            self.valid_epoch = epoch;
            if !self.quiet {
                self.line(&format!(
                    "  valid {epoch}/{}  {}",
                    self.epochs,
                    Self::summary(&self.valid)
                ));
            }
            self.valid.clear();
        }
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.end_epoch();
        Ok(())
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state, true);
    }

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name));
    }
}
