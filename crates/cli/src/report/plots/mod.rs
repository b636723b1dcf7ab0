//! The report's figures, drawn with plotters: line charts in panels (training curves, accuracy
//! against shots), heat maps of routing counts, grouped bars (base / new / HM) and a grid of example
//! images. Every chart is drawn once by code generic over plotters' backend and rendered both as a
//! PNG (for Markdown and the HTML report) and as an SVG (for papers); text uses the bundled DejaVu
//! Sans ([`super::font`]), so rendering needs no system font.

mod bars;
mod grid;
mod heat_map;
mod lines;

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::font::{self, FAMILY};
pub use bars::{Bars, bars};
pub use grid::{ImageRow, image_grid};
pub use heat_map::{HeatMap, heat_map};
pub use lines::{Panel, Series, XAxis, line_panels};

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

/// The legend of a chart's labelled series, in its upper right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}

/// A text style of `size` pixels anchored at (`h`, `v`) of the text.
fn anchored(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).pos(Pos::new(h, v))
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
