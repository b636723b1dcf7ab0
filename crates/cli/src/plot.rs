//! Minimal PNG charts for reports, drawn pixel by pixel (no plotting dependency).

use image::{Rgb, RgbImage};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
/// Line colours, one per series.
const PALETTE: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([148, 103, 189]),
];

/// A line chart of several series over a shared x axis (series in `PALETTE` order), y scaled to
/// the finite values' range. Legends live in the accompanying Markdown.
pub fn line_chart(series: &[(String, Vec<f64>)]) -> RgbImage {
    let (w, h, margin) = (480u32, 320u32, 30u32);
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    draw_line(
        &mut img,
        (margin, h - margin),
        (w - margin, h - margin),
        AXIS,
    );
    draw_line(&mut img, (margin, margin), (margin, h - margin), AXIS);
    let values = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return img;
    }
    let span = (hi - lo).max(1e-9);
    let longest = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let to_px = |i: usize, v: f64| {
        let x = margin + ((w - 2 * margin) as f64 * i as f64 / (longest - 1) as f64) as u32;
        let y = h - margin - ((h - 2 * margin) as f64 * (v - lo) / span) as u32;
        (x, y)
    };
    for (s, (_, values)) in series.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let points: Vec<(u32, u32)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| to_px(i, v))
            .collect();
        for pair in points.windows(2) {
            draw_line(&mut img, pair[0], pair[1], colour);
        }
    }
    img
}

/// A heat map: one row per entry, one column per count, each row normalised to its own total
/// (white = never, dark blue = always).
pub fn heat_map(rows: &[(String, Vec<usize>)]) -> RgbImage {
    let cols = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(1).max(1);
    let cell = 24u32;
    let mut img = RgbImage::from_pixel(cols as u32 * cell, rows.len().max(1) as u32 * cell, WHITE);
    for (r, (_, counts)) in rows.iter().enumerate() {
        let total: usize = counts.iter().sum();
        for (c, &count) in counts.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            };
            let shade = |full: f64| (255.0 - (255.0 - full) * share) as u8;
            let colour = Rgb([shade(8.0), shade(48.0), shade(107.0)]);
            for y in 1..cell - 1 {
                for x in 1..cell - 1 {
                    img.put_pixel(c as u32 * cell + x, r as u32 * cell + y, colour);
                }
            }
        }
    }
    img
}

/// Bresenham's line.
fn draw_line(img: &mut RgbImage, from: (u32, u32), to: (u32, u32), colour: Rgb<u8>) {
    let (mut x, mut y) = (from.0 as i64, from.1 as i64);
    let (x1, y1) = (to.0 as i64, to.1 as i64);
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, colour);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_map_shades_by_row_share() {
        let img = heat_map(&[("a".into(), vec![3, 1]), ("b".into(), vec![0, 0])]);
        assert_eq!(img.dimensions(), (48, 48));
        let dark = img.get_pixel(12, 12).0[0];
        let light = img.get_pixel(36, 12).0[0];
        assert!(dark < light, "{dark} vs {light}");
        assert_eq!(img.get_pixel(12, 36).0, [255, 255, 255]);
    }

    #[test]
    fn line_chart_draws_each_series() {
        let img = line_chart(&[
            ("a".into(), vec![3.0, 2.0, 1.0]),
            ("b".into(), vec![2.0, 2.5, 1.5]),
        ]);
        let has = |c: Rgb<u8>| img.pixels().any(|p| *p == c);
        assert!(has(PALETTE[0]) && has(PALETTE[1]));
    }
}
