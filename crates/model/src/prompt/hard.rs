//! Hard-prompt features with the frozen text encoder: `h[t, c]`, group prototypes `p[g, c]` and the
//! zero-shot template ensemble.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::PromptError;
use crate::clip::{Clip, l2_normalize};
use crate::templates::{TemplateGroups, fill};
use crate::tokenizer::ClipTokenizer;

/// Texts are encoded this many at a time.
const BATCH: usize = 256;

/// `h[t, c] = normalize(TextEncoder(template_t(c)))` for every template of every group (no bias
/// `w`), computed once per run.
#[derive(Debug, Clone)]
pub struct HardPrompts<B: Backend> {
    /// `[T, C, D]`, templates in group order.
    pub features: Tensor<B, 3>,
    /// Number of templates of each group, in order (they sum to `T`).
    pub group_sizes: Vec<usize>,
}

impl<B: Backend> HardPrompts<B> {
    /// Encodes every template of `groups` filled with every class name.
    pub fn new(
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        groups: &TemplateGroups,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        Self::from_groups(clip, tokenizer, groups.groups(), classnames, device)
    }

    /// Encodes templates given as groups (each group a non-empty list of templates with `{}`).
    pub fn from_groups(
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        groups: &[Vec<String>],
        classnames: &[String],
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        let context = clip.text.context_length();
        let templates: Vec<&String> = groups.iter().flatten().collect();
        if templates.is_empty() || classnames.is_empty() {
            return Err(PromptError::Config(
                "hard prompts need at least one template and one class".into(),
            ));
        }
        let mut texts = Vec::with_capacity(templates.len() * classnames.len());
        for template in &templates {
            if template.matches("{}").count() != 1 {
                return Err(PromptError::Template(format!(
                    "template '{template}' must contain exactly one '{{}}'"
                )));
            }
            for class in classnames {
                let text = fill(template, class);
                let needed = tokenizer.encode(&text).len() + 2;
                if needed > context {
                    return Err(PromptError::ClassTooLong {
                        classname: class.clone(),
                        tokens: tokenizer.encode(class).len(),
                        expert: format!("'{template}'"),
                        needed,
                        context_length: context,
                    });
                }
                texts.push(text);
            }
        }
        let parts: Vec<Tensor<B, 2>> = texts
            .chunks(BATCH)
            .map(|chunk| {
                let tokens: Vec<Vec<u32>> = chunk
                    .iter()
                    .map(|t| tokenizer.tokenize(t, context))
                    .collect();
                clip.encode_text(&tokens, device).detach()
            })
            .collect();
        let features = Tensor::cat(parts, 0);
        let d = features.dims()[1];
        Ok(Self {
            features: features.reshape([templates.len(), classnames.len(), d]),
            group_sizes: groups.iter().map(Vec::len).collect(),
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.features.dims()[1]
    }

    /// Features of template `t`, `[C, D]`.
    pub fn template(&self, t: usize) -> Tensor<B, 2> {
        let [_, c, d] = self.features.dims();
        self.features.clone().narrow(0, t, 1).reshape([c, d])
    }

    /// Group prototypes `p[g, c] = normalize(mean_{t ∈ g} h[t, c])`, `[G, C, D]`.
    pub fn prototypes(&self) -> Tensor<B, 3> {
        let [_, c, d] = self.features.dims();
        let mut start = 0;
        let protos: Vec<Tensor<B, 2>> = self
            .group_sizes
            .iter()
            .map(|&size| {
                let mean = self
                    .features
                    .clone()
                    .narrow(0, start, size)
                    .mean_dim(0)
                    .reshape([c, d]);
                start += size;
                l2_normalize(mean)
            })
            .collect();
        Tensor::stack(protos, 0)
    }

    /// Class-agnostic prototypes `p̄[g] = normalize(mean_c p[g, c])`, `[G, D]`.
    pub fn class_agnostic_prototypes(&self) -> Tensor<B, 2> {
        let protos = self.prototypes();
        let [g, _, d] = protos.dims();
        l2_normalize(protos.mean_dim(1).reshape([g, d]))
    }

    /// CLIP's prompt ensemble over every template: `normalize(mean_t h[t, c])`, `[C, D]`.
    pub fn ensemble(&self) -> Tensor<B, 2> {
        let [_, c, d] = self.features.dims();
        l2_normalize(self.features.clone().mean_dim(0).reshape([c, d]))
    }

    /// The same features restricted to some classes (by index), e.g. the training classes.
    pub fn select_classes(&self, classes: &[usize]) -> Self {
        let device = self.features.device();
        let index = Tensor::from_data(
            burn::tensor::TensorData::new(
                classes.iter().map(|&c| c as i64).collect::<Vec<_>>(),
                [classes.len()],
            ),
            &device,
        );
        Self {
            features: self.features.clone().select(1, index),
            group_sizes: self.group_sizes.clone(),
        }
    }
}
