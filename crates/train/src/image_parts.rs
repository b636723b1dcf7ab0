//! The image side of an LN-tuned training step on Burn's CPU backend, run in parts on threads of
//! their own, each part with an autodiff graph of its own.
//!
//! Burn's CPU backend runs its elementwise operations on one core each, so one forward and
//! backward pass through the image encoder leaves cores idle; one part of the batch per thread
//! keeps them busy. One graph recorded from several threads would sum the LayerNorms' gradients
//! over the parts in an order that changes from run to run, and a resumed run must repeat the
//! uninterrupted one bit for bit. So each part runs a fork of the encoder (the same weights, its
//! own gradient leaves), the rest of the step reads the features through one detached leaf, and
//! after the step's backward pass each part carries that leaf's gradient back through its own
//! graph. The parts' gradients are summed in part order, the same on every run.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use mocoop_model::clip::{VisionEncoder, l2_normalize, on_threads, tracks_gradients};

/// Normalised image features computed in parts, and what their backward pass needs.
pub struct ImageParts<B: AutodiffBackend> {
    parts: Vec<Part<B>>,
    /// The parts' features, concatenated and detached into one leaf of the step's graph.
    features: Tensor<B, 2>,
}

/// One part of the batch: the fork of the encoder it ran through and its tracked features.
struct Part<B: AutodiffBackend> {
    encoder: VisionEncoder<B>,
    features: Tensor<B, 2>,
}

impl<B: AutodiffBackend> ImageParts<B> {
    /// The normalised features of `images` through `encoder`, in `count` parts (one per CPU
    /// thread on Burn's CPU backend:
    /// [`cpu_parts`](mocoop_model::clip::cpu_parts)); `None` when the batch is better run whole:
    /// fewer than two parts, or no parameter of the encoder trained (then nothing needs a graph,
    /// and the encoder splits its batch by itself).
    pub fn encode(encoder: &VisionEncoder<B>, images: &Tensor<B, 4>, count: usize) -> Option<Self> {
        if count < 2 || !tracks_gradients(encoder) {
            return None;
        }
        let device = images.device();
        let parts = on_threads(images.clone().chunk(count, 0), |chunk| {
            let encoder = encoder.clone().fork(&device);
            let features = l2_normalize(encoder.forward(chunk));
            Part { encoder, features }
        });
        let features = parts.iter().map(|p| p.features.clone().detach()).collect();
        Some(Self {
            parts,
            features: Tensor::cat(features, 0).require_grad(),
        })
    }

    /// The features `[N, D]` for the rest of the step.
    pub fn features(&self) -> Tensor<B, 2> {
        self.features.clone()
    }

    /// The step's gradients for `model`'s parameters (from `grads`, the step's backward pass),
    /// with the encoder's trained parameters' gradients added: each part carries its share of
    /// the features' gradient back through its own graph on a thread of its own, and the parts'
    /// gradients are summed in order.
    pub fn backward<M: AutodiffModule<B>>(
        self,
        mut grads: B::Gradients,
        model: &M,
    ) -> GradientsParams {
        let upstream = self.features.grad_remove(&mut grads);
        let mut params = GradientsParams::from_grads(grads, model);
        let Some(upstream) = upstream else {
            return params;
        };
        let upstream = Tensor::<B, 2>::from_inner(upstream);
        let mut start = 0;
        let shares: Vec<_> = self
            .parts
            .into_iter()
            .map(|part| {
                let rows = part.features.dims()[0];
                let share = upstream.clone().narrow(0, start, rows);
                start += rows;
                (part, share)
            })
            .collect();
        // Every fork has the encoder's parameter ids; one of them names what to sum.
        let encoder = shares[0].0.encoder.clone();
        let per_part = on_threads(shares, |(part, share)| {
            let grads = (part.features * share).sum().backward();
            GradientsParams::from_grads(grads, &part.encoder)
        });
        encoder.visit(&mut SumOverParts {
            parts: per_part,
            total: &mut params,
        });
        params
    }
}

/// Adds, for each tracked parameter it visits, the sum of its gradients over `parts` (in order)
/// to `total`.
struct SumOverParts<'a> {
    parts: Vec<GradientsParams>,
    total: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SumOverParts<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let sum = self
            .parts
            .iter_mut()
            .filter_map(|grads| grads.remove::<B::InnerBackend, D>(param.id))
            .reduce(|a, b| a + b);
        if let Some(sum) = sum {
            self.total.register(param.id, sum);
        }
    }
}
