//! What a trained router decides on a test set ([`route`]): how often it picked each expert per
//! image style and per class, and the images each expert was picked for most confidently; with the
//! figures and tables of those.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use mocoop_data::{Dataset, Item, Loader, LoaderConfig};
use mocoop_model::prompt::ExpertInit;
use mocoop_model::tokenizer::ClipTokenizer;
use mocoop_train::TrainedRun;

use super::plots::{self, Figure, HeatMap, ImageRow};
use super::table::Table;
use crate::model_args::to_rows;

/// Runs `run`'s classifier over `items` (images of `dataset`, classes `classnames`) and hands each
/// item with its gates (`[E]`, zero for the experts not picked; one expert's weight 1 for a method
/// without routing) to `visit`.
pub fn route<B: Backend>(
    run: &TrainedRun<B>,
    tokenizer: &ClipTokenizer,
    dataset: &Dataset,
    device: &B::Device,
    mut visit: impl FnMut(&Item, &[f32]),
) -> Result<()> {
    let classifier = run.classifier(tokenizer, &dataset.classnames, &dataset.name, device)?;
    let size = run.clip().config().vision.image_size as u32;
    let items = &dataset.test;
    let loader = Loader::new(&dataset.name, items.clone(), LoaderConfig::test(size, 64));
    for batch in loader.epoch::<B>(0, device) {
        let batch = batch?;
        let rows = match classifier.predict(batch.images).gates {
            Some(gates) => to_rows(gates)?,
            None => vec![vec![1.0]; batch.indices.len()],
        };
        for (row, &index) in rows.iter().zip(&batch.indices) {
            visit(&items[index], row);
        }
    }
    Ok(())
}

/// How an expert is named in tables and figures: its template, or how its context was made.
pub fn expert_name(init: &ExpertInit) -> String {
    match init {
        ExpertInit::Template { template } => template.clone(),
        other => other.describe(),
    }
}

/// Example images kept per expert.
pub const EXAMPLES: usize = 6;

/// Routing counts (top-K slots) and the most confident examples of each expert.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Each expert's name (its template).
    pub experts: Vec<String>,
    /// Counts per image style (`by_style[style][expert]`).
    pub by_style: BTreeMap<String, Vec<usize>>,
    /// Counts per class, in class order.
    pub by_class: Vec<(String, Vec<usize>)>,
    /// Per expert, its [`EXAMPLES`] images with the highest gate weight, highest first.
    pub examples: Vec<Vec<(f32, PathBuf)>>,
}

impl Routing {
    /// Empty counts over `styles` and `classes` for these experts.
    fn new(experts: Vec<String>, styles: &[&str], classes: &[String]) -> Self {
        let e = experts.len();
        Self {
            by_style: styles.iter().map(|s| (s.to_string(), vec![0; e])).collect(),
            by_class: classes.iter().map(|c| (c.clone(), vec![0; e])).collect(),
            examples: vec![Vec::new(); e],
            experts,
        }
    }

    /// Counts one image's gates (`gates[e] > 0` where the router picked expert `e`).
    fn add(&mut self, style: Option<&str>, label: usize, gates: &[f32], path: &std::path::Path) {
        let e = self.experts.len();
        for (expert, &g) in gates.iter().enumerate().filter(|(_, g)| **g > 0.0) {
            if let Some(style) = style {
                let counts = self.by_style.entry(style.to_string());
                counts.or_insert_with(|| vec![0; e])[expert] += 1;
            }
            self.by_class[label].1[expert] += 1;
            let kept = &mut self.examples[expert];
            kept.push((g, path.to_path_buf()));
            kept.sort_by(|a, b| b.0.total_cmp(&a.0));
            kept.truncate(EXAMPLES);
        }
    }

    /// The router's choices over `dataset`'s test split, per class and (where `style` names one)
    /// per image style, with each expert's most confident examples.
    pub fn of_run<B: Backend>(
        run: &TrainedRun<B>,
        tokenizer: &ClipTokenizer,
        dataset: &Dataset,
        styles: &[&str],
        style: impl Fn(&Item) -> Option<&'static str>,
        device: &B::Device,
    ) -> Result<Self> {
        let templates = run.config.mixture.experts.iter().map(expert_name).collect();
        let mut routing = Self::new(templates, styles, &dataset.classnames);
        route(run, tokenizer, dataset, device, |item, gates| {
            routing.add(style(item), item.label, gates, &item.path);
        })?;
        Ok(routing)
    }

    /// Counts by style as rows.
    pub fn style_rows(&self) -> Vec<(String, Vec<usize>)> {
        self.by_style
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The heat map of `rows` (named `what`) against the experts.
    pub fn heat_map(&self, what: &str, rows: &[(String, Vec<usize>)]) -> Result<Figure> {
        plots::heat_map(&HeatMap {
            title: format!("Router choices per {what} on the test images"),
            row_label: what.to_string(),
            col_label: "expert (the template it started from)".into(),
            rows: rows.iter().map(|(name, _)| name.clone()).collect(),
            cols: self.experts.clone(),
            counts: rows.iter().map(|(_, counts)| counts.clone()).collect(),
        })
    }

    /// The table of `rows` (named `what`) against the experts.
    pub fn table(&self, what: &str, rows: &[(String, Vec<usize>)]) -> Table {
        let experts = self
            .experts
            .iter()
            .enumerate()
            .map(|(e, t)| format!("expert {e}: {t}"));
        let mut table = Table::new(std::iter::once(what.to_string()).chain(experts));
        for (name, counts) in rows {
            table.push(std::iter::once(name.clone()).chain(counts.iter().map(usize::to_string)));
        }
        table
    }

    /// One row of pictures per expert: the images it was picked for most confidently (an
    /// unreadable image is left out).
    pub fn examples_grid(&self) -> Result<Figure> {
        let rows: Vec<ImageRow> = self
            .experts
            .iter()
            .zip(&self.examples)
            .enumerate()
            .map(|(e, (template, examples))| {
                let images = examples
                    .iter()
                    .filter_map(|(_, path)| image::open(path).ok().map(|i| i.to_rgb8()))
                    .collect();
                (format!("expert {e}: {template}"), images)
            })
            .collect();
        plots::image_grid(
            "Test images each expert is picked for most confidently",
            &rows,
            64,
        )
    }
}
