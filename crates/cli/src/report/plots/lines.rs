//! Panels of line charts (training curves, accuracy against shots).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    Chart, DrawResult, FAMILY, Figure, colour, draw_legend, integer_tick, padded_range, render,
    tick_label,
};

/// One line of a chart: its legend entry and its `(x, y)` points (non-finite `y` are left out).
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Index of its colour, so that one run has one colour in every panel.
    pub colour: usize,
}

/// How a panel's x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Linear, ticks at round numbers (epochs).
    Linear,
    /// Base-2 logarithmic, ticks at the values of the points (shots 1, 2, 4, 8, 16).
    Log2,
}

/// One chart of a [`line_panels`] figure.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The panel's caption.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// How x maps.
    pub x_axis: XAxis,
    /// The lines.
    pub series: Vec<Series>,
}

/// Panels of line charts, three to a row, under one title.
pub fn line_panels(title: &str, panels: &[Panel]) -> Result<Figure> {
    render(&LinePanels { title, panels })
}

struct LinePanels<'a> {
    title: &'a str,
    panels: &'a [Panel],
}

impl LinePanels<'_> {
    fn grid(&self) -> (usize, usize) {
        let cols = self.panels.len().clamp(1, 3);
        (self.panels.len().max(1).div_ceil(cols), cols)
    }
}

impl Chart for LinePanels<'_> {
    fn size(&self) -> (u32, u32) {
        let (rows, cols) = self.grid();
        let title = self.title.chars().count() as u32 * 11 + 40;
        ((cols as u32 * 460).max(title), rows as u32 * 330 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(self.title, (FAMILY, 22))?;
        let areas = body.split_evenly(self.grid());
        for (panel, area) in self.panels.iter().zip(&areas) {
            draw_panel(panel, area)?;
        }
        Ok(())
    }
}

/// The x value at which a point is drawn.
fn x_position(axis: XAxis, x: f64) -> f64 {
    match axis {
        XAxis::Linear => x,
        XAxis::Log2 => x.log2(),
    }
}
fn draw_panel<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let finite = |s: &Series| -> Vec<(f64, f64)> {
        s.points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (x_position(panel.x_axis, x), y))
            .collect()
    };
    let lines: Vec<Vec<(f64, f64)>> = panel.series.iter().map(finite).collect();
    let (x_lo, x_hi) = padded_range(lines.iter().flatten().map(|p| p.0));
    let (y_lo, y_hi) = padded_range(lines.iter().flatten().map(|p| p.1));
    // Linear axes get plotters' round ticks; log axes one per power of two (labelled with it).
    let ticks = match panel.x_axis {
        XAxis::Linear => ((x_hi - x_lo).ceil() as usize + 1).min(8),
        XAxis::Log2 => (x_hi - x_lo).ceil() as usize + 1,
    };
    let axis = panel.x_axis;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 17))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_labels(ticks)
        .x_label_formatter(&|v| match axis {
            XAxis::Linear => tick_label(*v, x_hi - x_lo),
            XAxis::Log2 => integer_tick(*v)
                .map(|p| tick_label(p.exp2(), 1.0))
                .unwrap_or_default(),
        })
        .y_label_formatter(&|v| tick_label(*v, y_hi - y_lo))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;
    for (series, points) in panel.series.iter().zip(lines) {
        let ink = colour(series.colour);
        let style = ink.stroke_width(2);
        let marks = points.clone();
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(series.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(marks.into_iter().map(|p| Circle::new(p, 3, ink.filled())))?;
    }
    draw_legend(&mut chart)
}
