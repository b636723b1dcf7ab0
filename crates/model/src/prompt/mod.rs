//! The mixture of soft prompts (MoCoOp), with CoOp and zero-shot CLIP as special cases.
//!
//! - [`ExpertLayout`] (`layout`): how each expert's prompt is laid out in tokens (host side);
//!   `words`: the official code's layout, its contexts counted in words ([`ContextCount`]).
//! - [`MixtureOfPrompts`]: the learnable part — one context per expert ([`PromptPool`]), the
//!   shared text bias `w` and the router — and the forward computations: the text features
//!   `z[g,c] = normalize(TextEncoder(P_g(c)) + w)`, the router's top-K gates and the mixture
//!   logits.
//! - [`ClassPrompts`]: the fixed part of all `E × C` prompts for one list of class names, built
//!   once and reused every step (one gather per step assembles the prompts).
//! - [`TextShard`]: one device's share of those prompts, when a training step splits its text
//!   side by class across devices.
//! - [`HardPrompts`]: features of the hand-written templates with the frozen encoder, their group
//!   prototypes and the zero-shot ensemble.
//! - [`PromptClassifier`]: inference with every text feature computed once and cached; the same
//!   code path serves trained mixtures, CoOp and zero-shot CLIP.
//!
//! - `adopt`: a mixture taking over another's tensors where their shapes match (the official
//!   code's loading of a run into another dataset configuration).
//!
//! Nothing here trains; losses and optimisation live in the `mocoop-train` crate.

mod adopt;
mod buckets;
mod classifier;
mod hard;
pub(crate) mod layout;
mod mixture;
mod pool;
mod shard;
mod words;

pub use classifier::{PromptClassifier, mix_logits, top_k_gates};
pub use hard::HardPrompts;
pub use layout::{
    ContextCount, ExpertInit, ExpertLayout, LayoutOptions, PromptSequences, WordSplit,
};
pub use mixture::{MixtureConfig, MixtureOfPrompts, seeded_linear};
pub use pool::{ClassPrompts, PromptPool};
pub use shard::TextShard;

/// Why prompts could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A template cannot make a prompt.
    #[error("{0}")]
    Template(String),
    /// A class name does not fit the text encoder's context with some expert's prompt.
    #[error(
        "class name '{classname}' ({tokens} tokens) makes the prompt of expert {expert} \
         {needed} tokens long, more than the text encoder's context length {context_length}"
    )]
    ClassTooLong {
        /// The class name.
        classname: String,
        /// Its BPE token count.
        tokens: usize,
        /// The expert (its template).
        expert: String,
        /// The prompt length it would need, SOT and EOT included.
        needed: usize,
        /// The encoder's context length.
        context_length: usize,
    },
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// Saved tensors do not fit the configuration.
    #[error("{0}")]
    Checkpoint(String),
}

#[cfg(test)]
mod tests;
