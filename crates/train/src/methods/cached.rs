//! The classifier of every method whose text features do not depend on the image (zero-shot
//! CLIP, CoOp, MoCoOp): the text side computed once, then per batch only the image encoder, the
//! router and the mix.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use mocoop_model::Clip;
use mocoop_model::prompt::{PromptClassifier, mix_logits};

use crate::learner::{ImageClassifier, Prediction};

/// CLIP's image encoder in front of cached text features.
#[derive(Debug)]
pub struct TextCachedClassifier<'a, B: Backend> {
    clip: &'a Clip<B>,
    text: PromptClassifier<B>,
}

impl<'a, B: Backend> TextCachedClassifier<'a, B> {
    /// Classifies with `clip`'s image encoder and the text features of `text`.
    pub fn new(clip: &'a Clip<B>, text: PromptClassifier<B>) -> Self {
        Self { clip, text }
    }
}

impl<B: Backend> ImageClassifier<B> for TextCachedClassifier<'_, B> {
    fn predict(&self, images: Tensor<B, 4>) -> Prediction<B> {
        let f = self.clip.encode_image(images);
        let t = &self.text;
        let gates = t.gates(f.clone());
        let logits = mix_logits(f, t.text.clone(), gates.clone(), t.renormalize, t.scale);
        Prediction {
            gates: t.router.is_some().then_some(gates),
            logits,
        }
    }

    fn experts(&self) -> usize {
        self.text.experts()
    }
}
