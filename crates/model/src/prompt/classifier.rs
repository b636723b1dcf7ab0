//! Top-K gates, mixture logits, and the cached-text-feature classifier used for inference.

use burn::module::AutodiffModule;
use burn::nn::Linear;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{IndexingUpdateOp, Tensor, activation};

use super::{HardPrompts, MixtureOfPrompts};

/// Dense top-K gates of router logits `[N, E]`: a softmax over each row's `k` largest logits,
/// zero elsewhere (the other logits are masked to −∞ before the softmax). `k ≥ E` is a plain
/// softmax. Selection is on detached values; gradients flow through the softmax of the selected
/// logits.
pub fn top_k_gates<B: Backend>(logits: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [n, e] = logits.dims();
    assert!(k > 0, "top-k needs k >= 1");
    if k >= e {
        return activation::softmax(logits, 1);
    }
    let device = logits.device();
    let selected = logits
        .clone()
        .detach()
        .argsort_descending(1)
        .narrow(1, 0, k); // [N, K]
    let unselected = Tensor::<B, 2>::zeros([n, e], &device)
        .scatter(
            1,
            selected,
            Tensor::ones([n, k], &device),
            IndexingUpdateOp::Add,
        )
        .lower_elem(0.5);
    activation::softmax(logits.mask_fill(unselected, f32::NEG_INFINITY), 1)
}

/// `scale · <f[n], t[n, c]>` with the mixed class features `t[n, c] = Σ_e gates[n, e] · z[e, c]`.
///
/// `f`: L2-normalised image features `[N, D]`; `z`: text features `[E, C, D]`; `gates`: `[N, E]`.
/// Without re-normalisation this is computed as `Σ_e G[n,e] · (f @ zᵀ)[n,e,c]` (never building
/// `t`); with `renormalize`, `t[n, c]` is built and L2-normalised first.
pub fn mix_logits<B: Backend>(
    f: Tensor<B, 2>,
    z: Tensor<B, 3>,
    gates: Tensor<B, 2>,
    renormalize: bool,
    scale: f32,
) -> Tensor<B, 2> {
    let [n, d] = f.dims();
    let [e, c, _] = z.dims();
    if renormalize {
        let t = gates.matmul(z.reshape([e, c * d])).reshape([n, c, d]);
        let norm = t.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
        let t = t / norm;
        return t.matmul(f.reshape([n, d, 1])).reshape([n, c]) * scale;
    }
    let s = f
        .matmul(z.reshape([e * c, d]).transpose())
        .reshape([n, e, c]);
    gates.reshape([n, 1, e]).matmul(s).reshape([n, c]) * scale
}

/// A classifier over one list of classes with every text feature computed once: per image, only
/// the router and the K-way mix remain. Trained mixtures, CoOp and zero-shot CLIP all classify
/// through it.
#[derive(Debug, Clone)]
pub struct PromptClassifier<B: Backend> {
    /// Text features `[E, C, D]`, L2-normalised.
    pub text: Tensor<B, 3>,
    /// The router (`None`: the experts are averaged with equal weights; with one expert, that is
    /// that expert).
    pub router: Option<Linear<B>>,
    /// Experts mixed per image.
    pub top_k: usize,
    /// Whether mixed class features are re-normalised.
    pub renormalize: bool,
    /// `exp(logit_scale)`.
    pub scale: f32,
}

impl<B: Backend> PromptClassifier<B> {
    /// Zero-shot CLIP from text features `[C, D]` (one template, or an ensemble).
    pub fn zero_shot(text: Tensor<B, 2>, logit_scale: f32) -> Self {
        let [c, d] = text.dims();
        Self {
            text: text.reshape([1, c, d]),
            router: None,
            top_k: 1,
            renormalize: false,
            scale: logit_scale.exp(),
        }
    }

    /// Zero-shot CLIP with the ensemble of every template of `hard` (CLIP's prompt ensembling:
    /// the normalised mean of the normalised template features).
    pub fn ensemble(hard: &HardPrompts<B>, logit_scale: f32) -> Self {
        Self::zero_shot(hard.ensemble(), logit_scale)
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.text.dims()[1]
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.text.dims()[0]
    }

    /// Gates `[N, E]` for L2-normalised image features `[N, D]`.
    pub fn gates(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = f.dims()[0];
        let e = self.experts();
        match &self.router {
            Some(router) => top_k_gates(router.forward(f), self.top_k),
            None => Tensor::ones([n, e], &f.device()) / e as f32,
        }
    }

    /// Class logits `[N, C]` for L2-normalised image features `[N, D]`.
    pub fn logits(&self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        let gates = self.gates(f.clone());
        mix_logits(f, self.text.clone(), gates, self.renormalize, self.scale)
    }
}

impl<B: AutodiffBackend> MixtureOfPrompts<B> {
    /// The inference classifier of a (trained) mixture for `prompts`' classes, on the inner
    /// backend: all `E × C` text features are encoded once, `chunk` sequences at a time.
    pub fn inference_classifier(
        &self,
        text: &crate::clip::TextEncoder<B::InnerBackend>,
        prompts: &super::ClassPrompts<B::InnerBackend>,
        logit_scale: f32,
        chunk: usize,
    ) -> PromptClassifier<B::InnerBackend> {
        self.clone()
            .valid()
            .classifier(text, prompts, logit_scale, chunk)
    }
}

impl<B: Backend> MixtureOfPrompts<B> {
    /// The classifier for `prompts`' classes, every text feature encoded once (`chunk` sequences at
    /// a time).
    pub fn classifier(
        &self,
        text: &crate::clip::TextEncoder<B>,
        prompts: &super::ClassPrompts<B>,
        logit_scale: f32,
        chunk: usize,
    ) -> PromptClassifier<B> {
        let z = self.text_features_chunked(text, prompts, chunk);
        PromptClassifier {
            text: z,
            router: self.router.clone(),
            top_k: self.config().top_k,
            renormalize: self.config().renormalize,
            scale: logit_scale.exp(),
        }
    }
}
