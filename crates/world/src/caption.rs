//! Natural-language captions of scenes, with varied wording: the text side of the world.

use crate::attributes::{Pattern, Size, Style};
use crate::render::Scene;
use crate::rng::Rng;

/// `a` or `an` for the word that follows.
pub fn article(next: &str) -> &'static str {
    match next.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// Prefixes the phrase with `a`/`an`.
fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// One of several interchangeable words.
fn word(rng: &mut Rng, options: &[&'static str]) -> &'static str {
    options[rng.below(options.len())]
}

fn size_word(size: Size, rng: &mut Rng) -> &'static str {
    match size {
        Size::Small => word(rng, &["small", "small", "tiny", "little"]),
        Size::Large => word(rng, &["large", "large", "big"]),
    }
}

/// A pattern as an adjective placed before the shape ("striped"), if any.
fn pattern_adjective(pattern: Pattern, rng: &mut Rng) -> &'static str {
    match pattern {
        Pattern::Plain => word(rng, &["plain", "solid"]),
        Pattern::Striped => "striped",
        Pattern::Dotted => word(rng, &["dotted", "spotted"]),
        Pattern::Checkered => "checkered",
    }
}

/// A pattern as a trailing phrase ("with stripes").
fn pattern_phrase(pattern: Pattern, rng: &mut Rng) -> &'static str {
    match pattern {
        Pattern::Plain => word(rng, &["with no pattern", "in a single colour"]),
        Pattern::Striped => word(rng, &["with stripes", "with a striped pattern"]),
        Pattern::Dotted => word(rng, &["with dots", "with polka dots"]),
        Pattern::Checkered => word(rng, &["with a checkered pattern", "with checks"]),
    }
}

/// The object described without an article: `"small red striped circle"`,
/// `"blue star with dots"`, `"triangle that is green"`…
pub fn noun_phrase(scene: &Scene, rng: &mut Rng) -> String {
    let colour = scene.colour.name();
    let shape = scene.shape.name();
    let size = rng.chance(0.5).then(|| size_word(scene.size, rng));
    let mention_pattern = match scene.pattern {
        Pattern::Plain => rng.chance(0.25),
        _ => rng.chance(0.75),
    };
    let mut words: Vec<&str> = size.into_iter().collect();
    match rng.below(10) {
        // "small red striped circle"
        0..=4 => {
            words.push(colour);
            if mention_pattern {
                words.push(pattern_adjective(scene.pattern, rng));
            }
            words.push(shape);
            words.join(" ")
        }
        // "small red circle with stripes"
        5..=7 => {
            words.push(colour);
            words.push(shape);
            let mut phrase = words.join(" ");
            if mention_pattern {
                phrase = format!("{phrase} {}", pattern_phrase(scene.pattern, rng));
            }
            phrase
        }
        // "small striped circle that is red" / "small circle in red"
        _ => {
            if mention_pattern {
                words.push(pattern_adjective(scene.pattern, rng));
            }
            words.push(shape);
            let link = *rng.pick(&["that is", "coloured", "in"]);
            format!("{} {link} {colour}", words.join(" "))
        }
    }
}

/// A full caption: the object and the style in one of several natural phrasings.
pub fn caption(scene: &Scene, rng: &mut Rng) -> String {
    let np = noun_phrase(scene, rng);
    let a_np = with_article(&np);
    let text = match scene.style {
        Style::Photo => match rng.below(8) {
            0 => a_np,
            1 => format!("{a_np} on a gradient background"),
            2 => format!("{a_np}, photographed with soft light"),
            3 => format!("a shaded photo of {a_np}"),
            4 => format!("a clean photo of {a_np}"),
            5 => format!("a good photo of the {np}"),
            6 => format!("a picture of {a_np}"),
            _ => format!("a photo of {a_np}"),
        },
        Style::Sketch => match rng.below(8) {
            0 => format!("a line drawing of {a_np}"),
            1 => format!("an outline sketch of {a_np}"),
            2 => format!("{a_np}, drawn as a line sketch"),
            3 => format!("a pencil sketch of the {np}"),
            4 => format!("{a_np} sketched in outline on white paper"),
            5 => format!("a drawing of {a_np}"),
            6 => format!("a sketch of the {np}"),
            _ => format!("a sketch of {a_np}"),
        },
        Style::Pixelated => match rng.below(8) {
            0 => format!("a low resolution photo of {a_np}"),
            1 => format!("a pixelated image of the {np}"),
            2 => format!("{a_np} in blocky pixel art"),
            3 => format!("{a_np}, pixelated"),
            4 => format!("a low resolution photo of the {np}"),
            5 => format!("a blocky pixelated picture of {a_np}"),
            6 => format!("a pixelated photo of the {np}"),
            _ => format!("a pixelated photo of {a_np}"),
        },
        Style::Noisy => match rng.below(8) {
            0 => format!("a grainy photo of {a_np}"),
            1 => format!("a low contrast photo of {a_np}"),
            2 => format!("{a_np} in a noisy, faded photo"),
            3 => format!("a faded noisy image of the {np}"),
            4 => format!("a grainy low contrast photo of the {np}"),
            5 => format!("a noisy picture of {a_np}"),
            6 => format!("a noisy photo of the {np}"),
            _ => format!("a noisy photo of {a_np}"),
        },
        Style::Texture => match rng.below(8) {
            0 => format!("{} textured {np}", article("textured")),
            1 => format!("{a_np} with a rough texture"),
            2 => format!("{a_np} filled with texture"),
            3 => format!("the {np} made of texture"),
            4 => format!("a rough textured {np} on a textured background"),
            5 => format!("{a_np} made of a grainy texture"),
            6 => format!("a texture of {a_np}"),
            _ => format!("{a_np} made of texture"),
        },
    };
    if rng.chance(0.5) {
        format!("{text}.")
    } else {
        text
    }
}
