//! burn-train metrics over [`StepOutput`]: the loss and each term, accuracy, router entropy,
//! per-expert load, and the learning rate.

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};

use crate::step::StepOutput;

impl Adaptor<StepOutput> for StepOutput {
    fn adapt(&self) -> StepOutput {
        self.clone()
    }
}

/// One scalar of the step output (a loss term, the accuracy, the router entropy).
#[derive(Clone)]
pub struct ValueMetric {
    name: MetricName,
    key: &'static str,
    unit: Option<&'static str>,
    higher_is_better: bool,
    state: NumericMetricState,
}

impl ValueMetric {
    /// The metric shown as `name` for output key `key`.
    pub fn new(name: &str, key: &'static str) -> Self {
        Self {
            name: Arc::new(name.to_string()),
            key,
            unit: None,
            higher_is_better: false,
            state: NumericMetricState::new(),
        }
    }

    /// Accuracy in percent.
    pub fn accuracy() -> Self {
        Self {
            unit: Some("%"),
            higher_is_better: true,
            ..Self::new("Accuracy", "accuracy")
        }
    }
}

impl Metric for ValueMetric {
    type Input = StepOutput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &StepOutput, _metadata: &MetricMetadata) -> SerializedEntry {
        let value = item.value(self.key).unwrap_or(f64::NAN);
        let mut format = FormatOptions::new(self.name()).precision(4);
        if let Some(unit) = self.unit {
            format = format.unit(unit);
        }
        self.state.update(value, item.batch, format)
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: self.unit.map(str::to_string),
            higher_is_better: self.higher_is_better,
        }
        .into()
    }
}

impl Numeric for ValueMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// The learning rate of the step (shown in scientific notation).
#[derive(Clone)]
pub struct LrMetric {
    name: MetricName,
    state: NumericMetricState,
}

impl Default for LrMetric {
    fn default() -> Self {
        Self {
            name: Arc::new("Learning rate".into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for LrMetric {
    type Input = ();

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, _item: &(), metadata: &MetricMetadata) -> SerializedEntry {
        let lr = metadata.lr.unwrap_or(f64::NAN);
        self.state
            .update(lr, 1, FormatOptions::new(self.name()).precision(8));
        SerializedEntry::new(format!("{lr:.3e}"), lr.to_string())
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for LrMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Fraction of the top-K slots that went to each expert, averaged over the epoch so far.
#[derive(Clone)]
pub struct ExpertLoadMetric {
    name: MetricName,
    sums: Vec<f64>,
    steps: usize,
}

impl Default for ExpertLoadMetric {
    fn default() -> Self {
        Self {
            name: Arc::new("Expert load".into()),
            sums: Vec::new(),
            steps: 0,
        }
    }
}

impl Metric for ExpertLoadMetric {
    type Input = StepOutput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &StepOutput, _metadata: &MetricMetadata) -> SerializedEntry {
        if self.sums.len() != item.loads.len() {
            self.sums = vec![0.0; item.loads.len()];
            self.steps = 0;
        }
        for (s, l) in self.sums.iter_mut().zip(&item.loads) {
            *s += l;
        }
        self.steps += 1;
        let means: Vec<f64> = self.sums.iter().map(|s| s / self.steps as f64).collect();
        let formatted = means
            .iter()
            .map(|m| format!("{m:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        let serialized = serde_json::to_string(&item.loads).expect("floats");
        SerializedEntry::new(formatted, serialized)
    }

    fn clear(&mut self) {
        self.sums.clear();
        self.steps = 0;
    }
}
