//! A grid of example pictures, a labelled row each.

use anyhow::{Result, anyhow};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::{DrawResult, FAMILY, Figure, anchored, encode_png, font};

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
        let style = anchored(12, HPos::Left, VPos::Center);
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
