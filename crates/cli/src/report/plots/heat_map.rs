//! Heat maps of counts (the router's choices per style or class and expert).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;

use super::{Chart, DrawResult, FAMILY, Figure, anchored, render};
use plotters::style::text_anchor::{HPos, VPos};

/// Counts in a table of rows × columns, drawn as cells shaded by their count (against the
/// largest) with the count written in each.
#[derive(Debug, Clone)]
pub struct HeatMap {
    /// The figure's title.
    pub title: String,
    /// What the rows are (the y axis' label).
    pub row_label: String,
    /// What the columns are (the x axis' label).
    pub col_label: String,
    /// Row names, top to bottom.
    pub rows: Vec<String>,
    /// Column names, left to right.
    pub cols: Vec<String>,
    /// `counts[r][c]`.
    pub counts: Vec<Vec<usize>>,
}

/// A heat map with the counts written in its cells.
pub fn heat_map(map: &HeatMap) -> Result<Figure> {
    render(map)
}

impl HeatMap {
    /// Width of a column: enough for its longest name at 12 px.
    fn col_width(&self) -> u32 {
        let longest = self
            .cols
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(1);
        (longest as u32 * 7 + 12).max(48)
    }

    /// Width of the row-name area.
    fn row_label_width(&self) -> u32 {
        let longest = self
            .rows
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(1);
        longest as u32 * 8 + 40
    }
}

impl Chart for HeatMap {
    fn size(&self) -> (u32, u32) {
        let w = self.row_label_width() + self.cols.len().max(1) as u32 * self.col_width() + 30;
        let h = self.rows.len().max(1) as u32 * 26 + 150;
        (w.max(420), h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let body = root.titled(&self.title, (FAMILY, 20))?;
        let (rows, cols) = (self.rows.len(), self.cols.len());
        let mut chart = ChartBuilder::on(&body)
            .caption(
                "numbers: router choices (top-K slots); shade: count against the largest",
                (FAMILY, 13),
            )
            .margin(10)
            .margin_right(20)
            .x_label_area_size(44)
            .y_label_area_size(self.row_label_width())
            // A segmented `0..n` has n + 1 segments.
            .build_cartesian_2d(
                (0..cols.saturating_sub(1)).into_segmented(),
                (0..rows.saturating_sub(1)).into_segmented(),
            )?;
        let name = |names: &[String], v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        // Rows top to bottom: row r sits at y = rows - 1 - r.
        let flipped = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < rows => {
                name(&self.rows, &SegmentValue::CenterOf(rows - 1 - i))
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.col_label)
            .y_desc(&self.row_label)
            .x_labels(cols)
            .y_labels(rows)
            .x_label_formatter(&|v| name(&self.cols, v))
            .y_label_formatter(&flipped)
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 14))
            .draw()?;
        self.draw_cells(&mut chart)
    }
}

/// The heat map's coordinates: one segment per column and per row.
type Cells = Cartesian2d<SegmentedCoord<RangedCoordusize>, SegmentedCoord<RangedCoordusize>>;

impl HeatMap {
    /// The shaded cells with their counts, rows top to bottom.
    fn draw_cells<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<DB, Cells>,
    ) -> DrawResult<DB> {
        let rows = self.rows.len();
        let largest = self
            .counts
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        for (r, counts) in self.counts.iter().enumerate() {
            let y = rows - 1 - r;
            for (c, &count) in counts.iter().enumerate() {
                let share = count as f64 / largest as f64;
                let cell = [
                    (SegmentValue::Exact(c), SegmentValue::Exact(y + 1)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(y)),
                ];
                chart.draw_series(std::iter::once(Rectangle::new(cell, shade(share).filled())))?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let style = anchored(13, HPos::Center, VPos::Center).color(&ink);
                let at = (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y));
                chart.draw_series(std::iter::once(Text::new(count.to_string(), at, style)))?;
            }
        }
        Ok(())
    }
}

/// White for 0, dark blue for 1.
fn shade(share: f64) -> RGBColor {
    let mix = |full: f64| (255.0 - (255.0 - full) * share.clamp(0.0, 1.0)) as u8;
    RGBColor(mix(8.0), mix(48.0), mix(107.0))
}
