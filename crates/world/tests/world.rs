//! The world is deterministic, its attributes render distinctly and its captions name them.

use mocoop_world::render::{Geometry, object_mask, render_geometry};
use mocoop_world::rng::Rng;
use mocoop_world::{
    Colour, Combo, Pattern, Scene, Shape, Size, Style, World, WorldConfig, caption,
    default_held_out, render_with_mask,
};

fn world() -> World {
    World::new(WorldConfig::default())
}

#[test]
fn same_seed_same_world_different_seed_different_world() {
    let world = world();
    let a = world.pretraining_batch(7, 0, 16);
    let b = world.pretraining_batch(7, 0, 16);
    let c = world.pretraining_batch(8, 0, 16);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.image.as_raw(), y.image.as_raw());
        assert_eq!(x.caption, y.caption);
        assert_eq!(x.scene, y.scene);
    }
    let same = a
        .iter()
        .zip(&c)
        .filter(|(x, y)| x.image.as_raw() == y.image.as_raw())
        .count();
    assert_eq!(same, 0, "a different seed must give different images");
    assert_ne!(
        a.iter().map(|s| &s.caption).collect::<Vec<_>>(),
        c.iter().map(|s| &s.caption).collect::<Vec<_>>()
    );
    // Batches are the concatenation of single pairs, whatever the threading.
    let single = world.pretraining_pair(7, 5);
    assert_eq!(single.image.as_raw(), a[5].image.as_raw());
    assert_eq!(single.caption, a[5].caption);
}

#[test]
fn pretraining_never_shows_held_out_pairs_and_covers_the_rest() {
    let world = world();
    let held_out = default_held_out();
    assert_eq!(held_out.len(), 16);
    for colour in Colour::ALL {
        assert_eq!(held_out.iter().filter(|c| c.colour == *colour).count(), 2);
    }
    for shape in Shape::ALL {
        assert_eq!(held_out.iter().filter(|c| c.shape == *shape).count(), 2);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut styles = std::collections::BTreeSet::new();
    for i in 0..2000 {
        let mut rng = Rng::new(3, 1, i);
        let scene = world.random_scene(&mut rng);
        let combo = Combo::new(scene.colour, scene.shape);
        assert!(!held_out.contains(&combo), "{combo} is held out");
        seen.insert(combo);
        styles.insert(scene.style);
    }
    assert_eq!(seen.len(), 48);
    assert_eq!(styles.len(), Style::ALL.len());
}

fn scene(shape: Shape, colour: Colour, pattern: Pattern, style: Style) -> Scene {
    Scene {
        shape,
        colour,
        pattern,
        size: Size::Large,
        style,
    }
}

fn fixed_geometry(colour: Colour) -> Geometry {
    Geometry {
        cx: 0.5,
        cy: 0.5,
        radius: 0.4,
        rotation: 0.0,
        pattern_period: 0.2,
        pattern_angle: 0.0,
        fill: colour.rgb(),
    }
}

/// Mean colour of the pixels fully covered by the object.
fn object_mean(image: &image::RgbImage, mask: &[f32]) -> [f32; 3] {
    let mut sum = [0.0f32; 3];
    let mut n = 0.0;
    for (pixel, &m) in image.pixels().zip(mask) {
        if m > 0.99 {
            for (total, &value) in sum.iter_mut().zip(&pixel.0) {
                *total += value as f32 / 255.0;
            }
            n += 1.0;
        }
    }
    assert!(n > 20.0, "object covers too few pixels");
    sum.map(|s| s / n)
}

fn chroma_distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    let na = a.map(|c| c / (a.iter().sum::<f32>() + 1e-3));
    let nb = b.map(|c| c / (b.iter().sum::<f32>() + 1e-3));
    let brightness = (a.iter().sum::<f32>() - b.iter().sum::<f32>()) / 3.0;
    (0..3).map(|c| (na[c] - nb[c]).powi(2)).sum::<f32>() + 0.05 * brightness * brightness
}

#[test]
fn every_colour_renders_as_itself() {
    for (i, &colour) in Colour::ALL.iter().enumerate() {
        for style in [Style::Photo, Style::Texture] {
            let mut rng = Rng::new(11, 0, i as u64);
            let s = scene(Shape::Square, colour, Pattern::Plain, style);
            let rendered = render_with_mask(&s, 48, &mut rng);
            let mean = object_mean(&rendered.image, &rendered.object);
            let nearest = Colour::ALL
                .iter()
                .min_by(|a, b| {
                    chroma_distance(mean, a.rgb()).total_cmp(&chroma_distance(mean, b.rgb()))
                })
                .unwrap();
            assert_eq!(*nearest, colour, "{style:?}: mean object colour {mean:?}");
        }
    }
}

#[test]
fn every_shape_has_a_distinct_silhouette() {
    let g = fixed_geometry(Colour::Red);
    let masks: Vec<Vec<f32>> = Shape::ALL.iter().map(|&s| object_mask(s, &g, 32)).collect();
    for i in 0..masks.len() {
        assert!(
            masks[i].iter().sum::<f32>() > 100.0,
            "{:?} is too small",
            Shape::ALL[i]
        );
        for j in i + 1..masks.len() {
            let inter: f32 = masks[i].iter().zip(&masks[j]).map(|(a, b)| a.min(*b)).sum();
            let union: f32 = masks[i].iter().zip(&masks[j]).map(|(a, b)| a.max(*b)).sum();
            assert!(
                inter / union < 0.85,
                "{:?} and {:?} overlap too much (IoU {})",
                Shape::ALL[i],
                Shape::ALL[j],
                inter / union
            );
        }
    }
}

#[test]
fn patterns_differ_inside_the_object() {
    let g = fixed_geometry(Colour::Blue);
    let mask = object_mask(Shape::Square, &g, 32);
    let images: Vec<image::RgbImage> = Pattern::ALL
        .iter()
        .map(|&p| {
            let mut rng = Rng::new(1, 0, 0);
            render_geometry(
                &scene(Shape::Square, Colour::Blue, p, Style::Photo),
                &g,
                32,
                &mut rng,
            )
        })
        .collect();
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let differing = images[i]
                .pixels()
                .zip(images[j].pixels())
                .zip(&mask)
                .filter(|((a, b), m)| **m > 0.99 && a.0 != b.0)
                .count();
            assert!(
                differing > 40,
                "{:?} vs {:?}: {differing}",
                Pattern::ALL[i],
                Pattern::ALL[j]
            );
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    brightness: f32,
    /// Mean absolute difference between horizontal neighbours.
    roughness: f32,
    /// Fraction of horizontal neighbours that are exactly equal.
    flat_pairs: f32,
}

fn stats(image: &image::RgbImage) -> Stats {
    let (w, h) = image.dimensions();
    let mut s = Stats::default();
    let mut pairs = 0.0;
    for y in 0..h {
        for x in 0..w {
            let p = image.get_pixel(x, y).0;
            s.brightness += p.iter().map(|&c| c as f32).sum::<f32>() / (3.0 * 255.0);
            if x + 1 < w {
                let q = image.get_pixel(x + 1, y).0;
                s.roughness += (0..3)
                    .map(|c| (p[c] as f32 - q[c] as f32).abs())
                    .sum::<f32>()
                    / 765.0;
                s.flat_pairs += f32::from(u8::from(p == q));
                pairs += 1.0;
            }
        }
    }
    s.brightness /= (w * h) as f32;
    s.roughness /= pairs;
    s.flat_pairs /= pairs;
    s
}

#[test]
fn styles_differ_in_measurable_statistics() {
    let per_style: Vec<Stats> = Style::ALL
        .iter()
        .map(|&style| {
            let n = 40;
            let mut mean = Stats::default();
            for i in 0..n {
                let mut rng = Rng::new(5, 0, i);
                let s = Scene {
                    shape: *rng.pick(Shape::ALL),
                    colour: *rng.pick(Colour::ALL),
                    pattern: *rng.pick(Pattern::ALL),
                    size: *rng.pick(Size::ALL),
                    style,
                };
                let st = stats(&mocoop_world::render(&s, 32, &mut rng));
                mean.brightness += st.brightness / n as f32;
                mean.roughness += st.roughness / n as f32;
                mean.flat_pairs += st.flat_pairs / n as f32;
            }
            mean
        })
        .collect();
    let get = |style: Style| per_style[style.index()];
    let (photo, sketch, pixel, noisy, texture) = (
        get(Style::Photo),
        get(Style::Sketch),
        get(Style::Pixelated),
        get(Style::Noisy),
        get(Style::Texture),
    );
    // Sketches are mostly white paper.
    for other in [photo, pixel, noisy, texture] {
        assert!(sketch.brightness > other.brightness + 0.2, "{per_style:?}");
    }
    // Pixelated images are made of blocks of equal pixels.
    for other in [photo, sketch, noisy, texture] {
        assert!(pixel.flat_pairs > other.flat_pairs + 0.25, "{per_style:?}");
    }
    // Noise is the roughest, texture rougher than smooth photos.
    for other in [photo, sketch, pixel, texture] {
        assert!(noisy.roughness > other.roughness * 1.3, "{per_style:?}");
    }
    assert!(texture.roughness > photo.roughness * 1.3, "{per_style:?}");
}

#[test]
fn captions_name_colour_shape_and_style() {
    let world = world();
    let style_words: [(Style, &[&str]); 5] = [
        (
            Style::Photo,
            &[
                "photo",
                "picture",
                "background",
                "photographed",
                "a ",
                "an ",
            ],
        ),
        (Style::Sketch, &["sketch", "drawing"]),
        (Style::Pixelated, &["pixel", "low resolution"]),
        (Style::Noisy, &["noisy", "grainy", "low contrast"]),
        (Style::Texture, &["textur"]),
    ];
    let mut distinct = std::collections::BTreeSet::new();
    let mut with_pattern = 0;
    let mut patterned = 0;
    for i in 0..1000 {
        let sample = world.pretraining_pair(9, i);
        let text = &sample.caption;
        let scene = sample.scene;
        assert!(text.contains(scene.colour.name()), "{text} {scene:?}");
        assert!(text.contains(scene.shape.name()), "{text} {scene:?}");
        let words = style_words
            .iter()
            .find(|(s, _)| *s == scene.style)
            .unwrap()
            .1;
        assert!(words.iter().any(|w| text.contains(w)), "{text} {scene:?}");
        if scene.style != Style::Texture {
            assert!(!text.contains("textur"), "{text}");
        }
        if scene.pattern != Pattern::Plain {
            patterned += 1;
            let pattern_words = ["strip", "dot", "check"];
            if pattern_words.iter().any(|w| text.contains(w)) {
                with_pattern += 1;
            }
        }
        distinct.insert(text.clone());
    }
    assert!(
        distinct.len() > 700,
        "captions should vary: {} distinct",
        distinct.len()
    );
    assert!(
        with_pattern * 10 > patterned * 6,
        "{with_pattern}/{patterned} name their pattern"
    );
    let mut rng = Rng::new(0, 0, 0);
    let s = scene(Shape::Ring, Colour::Orange, Pattern::Plain, Style::Photo);
    let text = caption(&s, &mut rng);
    assert!(!text.contains("a orange"), "{text}");
}

#[test]
fn attribute_names_parse_back() {
    for combo in Combo::all() {
        assert_eq!(combo.name().parse::<Combo>().unwrap(), combo);
        assert_eq!(combo.dir_name().parse::<Combo>().unwrap(), combo);
    }
    assert!("teal circle".parse::<Combo>().is_err());
}
