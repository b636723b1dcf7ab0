//! Writes a contact sheet of the world: one row per style, one column per shape (random colour,
//! pattern and size), upscaled 4× for viewing, plus the captions of the first column.
//!
//! `cargo run -p mocoop-world --example contact_sheet -- sheet.png [seed] [size]`

use image::{RgbImage, imageops};
use mocoop_world::rng::Rng;
use mocoop_world::{Colour, Pattern, Scene, Shape, Size, Style, caption, render};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "contact_sheet.png".into());
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let size: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let zoom = 4;
    let cell = size * zoom + 4;
    let mut sheet = RgbImage::from_pixel(
        cell * Shape::ALL.len() as u32,
        cell * Style::ALL.len() as u32,
        image::Rgb([255, 255, 255]),
    );
    for (row, &style) in Style::ALL.iter().enumerate() {
        for (col, &shape) in Shape::ALL.iter().enumerate() {
            let mut rng = Rng::new(seed, 7, (row * 100 + col) as u64);
            let scene = Scene {
                shape,
                colour: *rng.pick(Colour::ALL),
                pattern: *rng.pick(Pattern::ALL),
                size: *rng.pick(Size::ALL),
                style,
            };
            let image = render(&scene, size, &mut rng);
            let big = imageops::resize(
                &image,
                size * zoom,
                size * zoom,
                imageops::FilterType::Nearest,
            );
            imageops::replace(
                &mut sheet,
                &big,
                (col as u32 * cell) as i64,
                (row as u32 * cell) as i64,
            );
            if col < 2 {
                println!("{style:>9} {:?}: {}", scene, caption(&scene, &mut rng));
            }
        }
    }
    sheet.save(&out).expect("write the sheet");
    println!("wrote {out}");
}
