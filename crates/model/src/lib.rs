#![warn(missing_docs)]
//! CLIP for prompt learning, generic over Burn backends.
//!
//! [`clip::Clip`] is a faithful CLIP (ViT image encoder, causal text encoder) built from OpenAI,
//! open_clip or transformers checkpoints through [`weights`]; [`tokenizer`] and [`preprocess`] turn
//! text and images into its inputs exactly as the reference code does.

pub mod atomic;
pub mod clip;
pub mod config;
mod cpu;
pub(crate) mod precision;
pub mod preprocess;
pub mod prompt;
pub mod templates;
pub mod tokenizer;
pub mod weights;

pub use clip::Clip;
pub use config::{Activation, ClipConfig};
pub use precision::Precision;
