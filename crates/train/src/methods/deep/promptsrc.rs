//! PromptSRC (Khattak et al., 2023): IVLP's independent prompts on both towers, regulated by
//! frozen CLIP. Beside the cross-entropy, each step adds
//! - `L_scl_text`: the mean absolute difference of the prompted class text features from frozen
//!   CLIP's features of the class averaged over a template ensemble (textual diversity), times
//!   its weight;
//! - `L_scl_image`: the same of the prompted image features from frozen CLIP's, times its weight;
//! - `L_scl_logits`: `KL(zero-shot ‖ prompted)` of the class distributions, summed and divided by
//!   the logits' count (batch × classes), the zero-shot logits being frozen CLIP's image features
//!   against the ensemble's text features at CLIP's scale.
//!
//! All features are L2-normalised; the ensemble is the mean of the unnormalised features over the
//! templates, normalised afterwards. The prompts a run keeps are the epochs' aggregate (`gpa.rs`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use mocoop_model::Clip;
use mocoop_model::clip::{TextEncoder, l2_normalize};
use mocoop_model::tokenizer::ClipTokenizer;

use super::gpa::Gpa;
use crate::config::SelfRegulation;
use crate::learner::LossTerm;
use crate::losses;
use crate::model::StepTerms;

/// The template ensemble (`assets/promptsrc-templates.txt`).
const TEMPLATE_FILE: &str = include_str!("../../../../../assets/promptsrc-templates.txt");

/// The terms PromptSRC adds, in the order the step reports them.
pub const TERMS: [LossTerm; 3] = [
    LossTerm {
        name: "L_scl_text",
        key: "scl_text",
    },
    LossTerm {
        name: "L_scl_image",
        key: "scl_image",
    },
    LossTerm {
        name: "L_scl_logits",
        key: "scl_logits",
    },
];

/// The ensemble's templates, `{}` the class name.
pub fn templates() -> Vec<&'static str> {
    TEMPLATE_FILE
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// Frozen CLIP's text features of `classnames` `[C, D]`: each class's features averaged over
/// [`templates`], then normalised; without a graph.
pub fn ensemble_features<B: Backend>(
    text: &TextEncoder<B>,
    tokenizer: &ClipTokenizer,
    classnames: &[String],
    device: &B::Device,
) -> Tensor<B, 2> {
    let templates = templates();
    let context = text.context_length();
    let sum = templates
        .iter()
        .map(|template| {
            let tokens: Vec<Vec<u32>> = classnames
                .iter()
                .map(|c| tokenizer.tokenize(&template.replace("{}", c), context))
                .collect();
            text.forward_tokens(&tokens, device).detach()
        })
        .reduce(|a, b| a + b)
        .expect("the ensemble has templates");
    l2_normalize(sum / templates.len() as f32).detach()
}

/// What PromptSRC adds to a deep-prompt model: frozen CLIP's text targets of the training classes,
/// the weights, and the running aggregate of the prompts.
#[derive(Module, Debug)]
pub struct Regulation<B: Backend> {
    /// The ensemble's normalised text features of the training classes `[C, D]`.
    pub text: Tensor<B, 2>,
    /// The weights and the aggregation's Gaussian.
    #[module(skip)]
    pub weights: SelfRegulation,
    /// The prompts aggregated over the epochs so far.
    #[module(skip)]
    pub gpa: Gpa,
}

impl<B: Backend> Regulation<B> {
    /// The regulation of a run over `classnames`, its aggregate shaped as `tensors` (the learned
    /// tensors by checkpoint name) over `epochs` epochs.
    pub fn new(
        weights: SelfRegulation,
        epochs: usize,
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        tensors: &[(String, burn::tensor::TensorData)],
        device: &B::Device,
    ) -> Self {
        Self {
            text: ensemble_features(&clip.text, tokenizer, classnames, device),
            gpa: Gpa::new(&weights, epochs, tensors),
            weights,
        }
    }

    /// `terms` (the cross-entropy of the prompted logits) with the three self-regulating terms
    /// added to the loss and reported: `z` the prompted class text features `[C, D]`, `f` the
    /// prompted image features `[N, D]` (both normalised) of `images`, `scale` CLIP's logit scale.
    pub fn regulate(
        &self,
        mut terms: StepTerms<B>,
        clip: &Clip<B>,
        images: Tensor<B, 4>,
        z: Tensor<B, 2>,
        f: Tensor<B, 2>,
        scale: f32,
    ) -> StepTerms<B> {
        let frozen = clip.encode_image(images).detach();
        let zero_shot = frozen.clone().matmul(self.text.clone().transpose()) * scale;
        let classes = zero_shot.dims()[1] as f32;
        let text = losses::mean_absolute(z, self.text.clone());
        let image = losses::mean_absolute(f, frozen);
        let logits = losses::distillation(terms.logits.clone(), zero_shot) / classes;
        let w = &self.weights;
        terms.loss = terms.loss
            + logits.clone()
            + text.clone() * w.text_weight
            + image.clone() * w.image_weight;
        let [t, i, l] = TERMS.map(|term| term.key);
        terms.terms.extend([(t, text), (i, image), (l, logits)]);
        terms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ensemble_is_the_official_sixty_templates() {
        let t = templates();
        assert_eq!(t.len(), 60);
        assert_eq!(t[0], "a photo of a {}.");
        assert_eq!(t[59], "itap of the {}.");
        assert!(t.iter().all(|t| t.matches("{}").count() == 1), "{t:?}");
    }
}
