#![warn(missing_docs)]
//! A world to measure in: a procedurally generated, seed-deterministic image-text world for
//! training and testing CLIP prompt learning without any download.
//!
//! - Objects are defined by composable attributes with ordinary English names:
//!   [`Shape`], [`Colour`], [`Pattern`], [`Size`]; each image is drawn in one of several
//!   [`Style`]s (photo-like, line sketch, pixelated, noisy, texture).
//! - [`World`] draws scenes (holding out some colour-shape pairs), [renders](render) them to small
//!   RGB images and [captions](fn@caption) them in varied natural phrasing; it is what contrastive
//!   pretraining of a small CLIP consumes.
//! - [`write_benchmark`] writes a classification benchmark over colour-shape classes in CoOp's
//!   folder layout with a base/new class split; its template groups are the `shapeworld` section
//!   of `assets/template-groups.toml`.
//!
//! Everything is deterministic from a seed (an explicitly specified generator, [`rng::Rng`]).

pub(crate) mod attributes;
pub(crate) mod benchmark;
pub(crate) mod caption;
pub mod render;
pub mod rng;
mod world;

pub use attributes::{Colour, Combo, Pattern, Shape, Size, Style};
pub use benchmark::{
    BenchSplit, Benchmark, BenchmarkConfig, BenchmarkError, BenchmarkMeta, DATASET_DIR,
    ImageRecord, SPLIT_FILE, TEMPLATE_SECTION, default_base, style_from_path, write_benchmark,
};
pub use caption::caption;
pub use render::{Geometry, Rendered, Scene, render, render_with_mask};
pub use world::{
    HELD_OUT_DIAGONALS, Sample, World, WorldConfig, attribute_words, default_held_out, stream,
};
