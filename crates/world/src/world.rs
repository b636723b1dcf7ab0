//! The world: scenes drawn at random (some colour-shape pairs held out), rendered and captioned.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::attributes::{Colour, Combo, Pattern, Shape, Size, Style};
use crate::caption::caption;
use crate::render::{Scene, render};
use crate::rng::Rng;

/// Random streams, so that pretraining, evaluation and benchmark images never share draws.
pub mod stream {
    /// Pretraining pairs.
    pub const PRETRAIN: u64 = 1;
    /// Benchmark images (offset by split).
    pub const BENCHMARK: u64 = 100;
}

/// The diagonals of the colour × shape grid (see [`Combo::diagonal`]) whose pairs are never shown
/// in pretraining: 16 of the 64 pairs, every colour and every shape in exactly two of them.
pub const HELD_OUT_DIAGONALS: [usize; 2] = [2, 5];

/// The colour-shape pairs held out of pretraining by default: zero-shot accuracy on them measures
/// composition of attributes never seen together, not recall.
pub fn default_held_out() -> Vec<Combo> {
    Combo::all()
        .into_iter()
        .filter(|c| HELD_OUT_DIAGONALS.contains(&c.diagonal()))
        .collect()
}

/// What the world draws from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Side of the square images, pixels.
    pub image_size: u32,
    /// Colour-shape pairs that [`World::pretraining_pair`] never draws.
    pub held_out: Vec<Combo>,
    /// Styles drawn from (all by default).
    pub styles: Vec<Style>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            held_out: default_held_out(),
            styles: Style::ALL.to_vec(),
        }
    }
}

/// One image-caption pair of the world.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What the image shows.
    pub scene: Scene,
    /// The image.
    pub image: RgbImage,
    /// A caption describing the scene.
    pub caption: String,
}

/// A procedurally generated image-text world, fully determined by its configuration and a seed.
#[derive(Debug, Clone)]
pub struct World {
    config: WorldConfig,
    seen: Vec<Combo>,
}

impl World {
    /// The world of `config`.
    ///
    /// # Panics
    /// If every colour-shape pair is held out or no style is enabled.
    pub fn new(config: WorldConfig) -> Self {
        let seen: Vec<Combo> = Combo::all()
            .into_iter()
            .filter(|c| !config.held_out.contains(c))
            .collect();
        assert!(!seen.is_empty(), "every colour-shape pair is held out");
        assert!(!config.styles.is_empty(), "no style enabled");
        Self { config, seen }
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The colour-shape pairs pretraining draws from.
    pub fn seen(&self) -> &[Combo] {
        &self.seen
    }

    /// Draws a scene of a given pair with random pattern, size and (enabled) style.
    pub fn scene_of(&self, combo: Combo, rng: &mut Rng) -> Scene {
        Scene {
            shape: combo.shape,
            colour: combo.colour,
            pattern: *rng.pick(Pattern::ALL),
            size: *rng.pick(Size::ALL),
            style: *rng.pick(&self.config.styles),
        }
    }

    /// Draws a scene whose colour-shape pair is not held out.
    pub fn random_scene(&self, rng: &mut Rng) -> Scene {
        let combo = *rng.pick(&self.seen);
        self.scene_of(combo, rng)
    }

    /// Renders a scene at the world's resolution.
    pub fn render(&self, scene: &Scene, rng: &mut Rng) -> RgbImage {
        render(scene, self.config.image_size, rng)
    }

    /// Pretraining pair number `index` of the stream of `seed`: the same `(seed, index)` always
    /// gives the same image bytes and caption.
    pub fn pretraining_pair(&self, seed: u64, index: u64) -> Sample {
        let mut rng = Rng::new(seed, stream::PRETRAIN, index);
        let scene = self.random_scene(&mut rng);
        let image = self.render(&scene, &mut rng);
        let caption = caption(&scene, &mut rng);
        Sample {
            scene,
            image,
            caption,
        }
    }

    /// Pairs `start..start + count` of the stream of `seed`, rendered on all available threads.
    pub fn pretraining_batch(&self, seed: u64, start: u64, count: usize) -> Vec<Sample> {
        parallel_map(count, |i| self.pretraining_pair(seed, start + i as u64))
    }
}

/// Maps `0..count` through `f` on up to `available_parallelism` threads, preserving order.
pub(crate) fn parallel_map<T: Send, F: Fn(usize) -> T + Sync>(count: usize, f: F) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    if threads <= 1 {
        return (0..count).map(f).collect();
    }
    let chunk = count.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(f)
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("world rendering thread panicked"))
            .collect()
    })
}

/// Every attribute value's word, for vocabulary checks.
pub fn attribute_words() -> Vec<&'static str> {
    Shape::ALL
        .iter()
        .map(|v| v.name())
        .chain(Colour::ALL.iter().map(|v| v.name()))
        .chain(Pattern::ALL.iter().map(|v| v.name()))
        .chain(Size::ALL.iter().map(|v| v.name()))
        .collect()
}
