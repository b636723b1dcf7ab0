//! The training-curves figure: one panel per quantity a run's `metrics.jsonl` records (each loss
//! term, training accuracy, router entropy, …) and one for the learning rate, with one line per
//! run.

use anyhow::Result;
use mocoop_train::EpochRecord;

use super::plots::{self, Figure, Panel, Series, XAxis};

/// The order the known quantities are shown in; others follow alphabetically.
const ORDER: [&str; 8] = [
    "loss",
    "ce",
    "text",
    "gate",
    "lb",
    "kd",
    "accuracy",
    "router_entropy",
];

/// What a quantity's panel is called and its y axis' label.
fn describe(key: &str) -> (String, &'static str) {
    match key {
        "loss" => ("total loss".into(), "loss"),
        "ce" | "text" | "gate" | "lb" | "kd" => (format!("loss term L_{key}"), "loss"),
        "accuracy" => ("training accuracy".into(), "accuracy (%)"),
        "router_entropy" => ("router entropy".into(), "nats"),
        other => (other.replace('_', " "), "value"),
    }
}

/// The quantities recorded by any of `runs`, in [`ORDER`].
fn keys(runs: &[(&str, &[EpochRecord])]) -> Vec<String> {
    let mut keys: Vec<String> = runs
        .iter()
        .flat_map(|(_, epochs)| epochs.iter().flat_map(|e| e.means.keys().cloned()))
        .collect();
    keys.sort_by_key(|k| {
        let rank = ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len());
        (rank, k.clone())
    });
    keys.dedup();
    keys
}

/// The figure of `runs` (name, epochs); runs without epochs (zero-shot) are left out.
pub fn training_curves(title: &str, runs: &[(&str, &[EpochRecord])]) -> Result<Figure> {
    let runs: Vec<(&str, &[EpochRecord])> = runs
        .iter()
        .copied()
        .filter(|(_, e)| !e.is_empty())
        .collect();
    let series = |value: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(colour, (name, epochs))| Series {
                name: name.to_string(),
                colour,
                points: epochs
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, value(e)?)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let mut panels: Vec<Panel> = keys(&runs)
        .into_iter()
        .map(|key| {
            let (title, y_label) = describe(&key);
            Panel {
                title,
                x_label: "epoch".into(),
                y_label: y_label.into(),
                x_axis: XAxis::Linear,
                series: series(&|e| e.means.get(&key).copied()),
            }
        })
        .collect();
    panels.push(Panel {
        title: "learning rate".into(),
        x_label: "epoch".into(),
        y_label: "lr".into(),
        x_axis: XAxis::Linear,
        series: series(&|e| Some(e.lr)),
    });
    plots::line_panels(title, &panels)
}
