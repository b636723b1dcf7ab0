//! The report's figures, drawn with plotters: line charts in panels (training curves, accuracy
//! against shots), heat maps of routing counts, grouped bars (base / new / HM) and a grid of example
//! images. Every chart is drawn once by code generic over plotters' backend and rendered both as a
//! PNG (for Markdown and the HTML report) and as an SVG (for papers); text uses the bundled DejaVu
//! Sans ([`super::font`]), so rendering needs no system font.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::font::{self, FAMILY};

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

/// A rendered figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Width and height in pixels (the SVG's size too).
    pub size: (u32, u32),
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// The SVG document (`None` for pictures, which are bitmaps anyway).
    pub svg: Option<String>,
}

impl Figure {
    /// Writes `dir/stem.png` and, for charts, `dir/stem.svg`.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        let png = dir.join(format!("{stem}.png"));
        std::fs::write(&png, &self.png).with_context(|| format!("writing {}", png.display()))?;
        if let Some(svg_text) = &self.svg {
            let svg = dir.join(format!("{stem}.svg"));
            std::fs::write(&svg, svg_text).with_context(|| format!("writing {}", svg.display()))?;
        }
        Ok(())
    }
}

/// A plotters error of any backend.
type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something drawn the same way on every backend.
trait Chart {
    /// The figure's size in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws onto `root`, which is already white.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `chart` as a PNG and as an SVG.
fn render(chart: &impl Chart) -> Result<Figure> {
    font::register();
    let size = chart.size();
    let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        chart.draw(&root).map_err(|e| anyhow!("drawing: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        chart.draw(&root).map_err(|e| anyhow!("drawing: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    Ok(Figure {
        size,
        png: encode_png(size, pixels)?,
        svg: Some(svg),
    })
}

/// RGB pixels as a PNG file's bytes.
fn encode_png((w, h): (u32, u32), pixels: Vec<u8>) -> Result<Vec<u8>> {
    let image = RgbImage::from_raw(w, h, pixels).context("pixel buffer of the wrong size")?;
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// The colour of the `i`-th series or bar.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Panels of line charts, three to a row, under one title.
pub fn line_panels(title: &str, panels: &[Panel]) -> Result<Figure> {
    render(&LinePanels { title, panels })
}

/// A heat map with the counts written in its cells.
pub fn heat_map(map: &HeatMap) -> Result<Figure> {
    render(map)
}

/// Grouped bars with the values written above them.
pub fn bars(bars: &Bars) -> Result<Figure> {
    render(bars)
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
        (cols as u32 * 460, rows as u32 * 330 + 40)
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

/// `v` when it is (to rounding) a whole number.
fn integer_tick(v: f64) -> Option<f64> {
    ((v - v.round()).abs() < 1e-6).then(|| v.round())
}

/// The range of `values` with a margin, never empty.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1.0) * 1e-3);
    (lo - pad, hi + pad)
}

/// Formats a tick value of an axis spanning `span` with the digits that tell ticks apart.
fn tick_label(v: f64, span: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        return format!("{v:.0}");
    }
    let decimals = (-(span / 10.0).log10().floor()).clamp(0.0, 8.0) as usize;
    format!("{v:.decimals$}")
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
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
                let style = TextStyle::from((FAMILY, 13).into_font()).color(&ink).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
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
                let style = TextStyle::from((FAMILY, 11).into_font()).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                );
                v.is_finite()
                    .then(|| Text::new(format!("{v:.1}"), (centre, v), style))
            });
            chart.draw_series(labels)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        Ok(())
    }
}

/// One row of an [`image_grid`]: its label and its pictures.
pub type ImageRow = (String, Vec<RgbImage>);

/// Rows of pictures, each row labelled on its left, under a title (a PNG only: the pictures are
/// bitmaps themselves).
pub fn image_grid(title: &str, rows: &[ImageRow], cell: u32) -> Result<Figure> {
    font::register();
    let label_width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(1) as u32
        * 7
        + 20;
    let columns = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0).max(1) as u32;
    let size = (
        (label_width + columns * (cell + 6) + 10).max(300),
        rows.len().max(1) as u32 * (cell + 6) + 50,
    );
    let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw_image_grid(&root, title, rows, cell, label_width)
            .map_err(|e| anyhow!("drawing: {e}"))?;
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    Ok(Figure {
        size,
        png: encode_png(size, pixels)?,
        svg: None,
    })
}

fn draw_image_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    rows: &[ImageRow],
    cell: u32,
    label_width: u32,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FAMILY, 18))?;
    for (r, (label, images)) in rows.iter().enumerate() {
        let y = (r as u32 * (cell + 6) + 4) as i32;
        let style =
            TextStyle::from((FAMILY, 12).into_font()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Left,
                plotters::style::text_anchor::VPos::Center,
            ));
        body.draw(&Text::new(label.clone(), (6, y + cell as i32 / 2), style))?;
        for (c, picture) in images.iter().enumerate() {
            let picture =
                image::imageops::resize(picture, cell, cell, image::imageops::FilterType::Nearest);
            let x = (label_width + c as u32 * (cell + 6)) as i32;
            if let Some(element) =
                BitMapElement::<_>::with_owned_buffer((x, y), (cell, cell), picture.into_raw())
            {
                body.draw(&element)?;
            }
        }
    }
    Ok(())
}
