//! Grouped bars (base / new / HM per dataset and method).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{
    Chart, DrawResult, FAMILY, Figure, anchored, colour, draw_legend, integer_tick, render,
    tick_label,
};
use plotters::style::text_anchor::{HPos, VPos};

/// Groups of bars side by side (one group per dataset and method, one bar per measure).
#[derive(Debug, Clone)]
pub struct Bars {
    /// The figure's title.
    pub title: String,
    /// The y axis' label.
    pub y_label: String,
    /// Group names (x axis).
    pub groups: Vec<String>,
    /// Bar names within a group (legend).
    pub bars: Vec<String>,
    /// `values[g][b]`.
    pub values: Vec<Vec<f64>>,
}

/// Grouped bars with the values written above them.
pub fn bars(bars: &Bars) -> Result<Figure> {
    render(bars)
}

impl Chart for Bars {
    fn size(&self) -> (u32, u32) {
        let per_group = (self.bars.len().max(1) as u32 * 34 + 30).max(110);
        let longest = self
            .groups
            .iter()
            .map(|g| g.chars().count())
            .max()
            .unwrap_or(1) as u32;
        let w = self.groups.len().max(1) as u32 * per_group.max(longest * 7 + 10) + 120;
        (w.max(self.title.chars().count() as u32 * 11 + 40), 420)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(&self.title, (FAMILY, 20))?;
        let groups = self.groups.len().max(1);
        let top = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&body)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..groups as f64 - 0.5, 0.0..(top * 1.15).max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(&self.y_label)
            // Groups sit at whole x, one tick each.
            .x_labels(groups + 1)
            .x_label_formatter(&|v| {
                integer_tick(*v)
                    .and_then(|g| self.groups.get(g as usize))
                    .cloned()
                    .unwrap_or_default()
            })
            .y_label_formatter(&|v| tick_label(*v, top))
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 14))
            .draw()?;
        self.draw_bars(&mut chart)?;
        draw_legend(&mut chart)
    }
}

impl Bars {
    /// Each measure's bars, with their values above them and their legend entry.
    fn draw_bars<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    ) -> DrawResult<DB> {
        let n = self.bars.len().max(1) as f64;
        let width = 0.8 / n;
        for (b, name) in self.bars.iter().enumerate() {
            let fill = colour(b).filled();
            let rects = self.values.iter().enumerate().filter_map(|(g, values)| {
                let v = *values.get(b)?;
                let left = g as f64 - 0.4 + b as f64 * width;
                v.is_finite()
                    .then(|| Rectangle::new([(left, 0.0), (left + width * 0.92, v)], fill))
            });
            chart
                .draw_series(rects)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill));
            let labels = self.values.iter().enumerate().filter_map(|(g, values)| {
                let v = *values.get(b)?;
                let centre = g as f64 - 0.4 + (b as f64 + 0.46) * width;
                let style = anchored(11, HPos::Center, VPos::Bottom);
                v.is_finite()
                    .then(|| Text::new(format!("{v:.1}"), (centre, v), style))
            });
            chart.draw_series(labels)?;
        }
        Ok(())
    }
}
