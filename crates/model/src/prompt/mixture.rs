//! The learnable mixture: prompt pool, shared text bias `w` and router.

use std::collections::BTreeMap;

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::PromptError;
use super::classifier::{mix_logits, top_k_gates};
use super::layout::{ExpertInit, ExpertLayout, LayoutOptions};
use super::pool::{ClassPrompts, PromptPool};
use super::shard::TextShard;
use crate::clip::{Clip, TextEncoder, l2_normalize};
use crate::templates::TemplateGroups;
use crate::tokenizer::ClipTokenizer;

/// A linear layer `[d_in] → [d_out]` initialised as PyTorch's `nn.Linear` is (weight and bias
/// `U(±1/√d_in)`), drawn on the host from `seed` (weight first, row-major `[d_in, d_out]`, then
/// bias), so that a run initialises the same on every backend.
pub fn seeded_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    seed: u64,
    device: &B::Device,
) -> Linear<B> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    };
    let weight = draw(d_in * d_out);
    let bias = draw(d_out);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(weight, [d_in, d_out]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [d_out]),
            device,
        ))),
    }
}

/// What a mixture of prompts is made of; saved with every trained run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureConfig {
    /// One entry per expert (soft prompt).
    pub experts: Vec<ExpertInit>,
    /// Experts mixed per image (K).
    pub top_k: usize,
    /// Whether a router picks the experts per image (otherwise they are averaged uniformly).
    pub router: bool,
    /// Whether the shared text bias `w` is learned.
    pub text_bias: bool,
    /// Whether the mixed class features are L2-normalised again (decision; default off).
    pub renormalize: bool,
    /// Seed of the router's and random contexts' initialisation.
    pub seed: u64,
    /// How the prompts are laid out (decisions; the official code's behaviours are options).
    #[serde(default)]
    pub layout: LayoutOptions,
}

impl MixtureConfig {
    /// MoCoOp: one expert per template group, from the group's first template, with router, top-K
    /// gates and the shared text bias.
    pub fn mocoop(groups: &TemplateGroups, top_k: usize, seed: u64) -> Self {
        Self {
            experts: groups
                .groups()
                .iter()
                .map(|g| ExpertInit::Template {
                    template: g[0].clone(),
                })
                .collect(),
            top_k,
            router: true,
            text_bias: true,
            renormalize: false,
            seed,
            layout: LayoutOptions::default(),
        }
    }

    /// CoOp: a single prompt, no router, no bias.
    pub fn coop(init: ExpertInit, seed: u64) -> Self {
        Self {
            experts: vec![init],
            top_k: 1,
            router: false,
            text_bias: false,
            renormalize: false,
            seed,
            layout: LayoutOptions::default(),
        }
    }

    /// Number of experts.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Checks that the configuration can be built.
    pub fn validate(&self) -> Result<(), PromptError> {
        let e = self.experts.len();
        if e == 0 {
            return Err(PromptError::Config(
                "a mixture needs at least one expert".into(),
            ));
        }
        if self.router && (self.top_k == 0 || self.top_k > e) {
            return Err(PromptError::Config(format!(
                "top-k = {} must be between 1 and the number of experts ({e})",
                self.top_k
            )));
        }
        for init in &self.experts {
            if let ExpertInit::Random { n_ctx, std } = init
                && (*n_ctx == 0 || !std.is_finite() || *std < 0.0)
            {
                return Err(PromptError::Config(format!(
                    "random context needs n_ctx >= 1 and a finite std >= 0 (got {n_ctx}, {std})"
                )));
            }
        }
        Ok(())
    }
}

/// The learnable part of MoCoOp (and of CoOp, its one-expert special case).
#[derive(Module, Debug)]
pub struct MixtureOfPrompts<B: Backend> {
    /// One soft prompt per expert.
    pub pool: PromptPool<B>,
    /// The shared text bias `w ∈ R^D` added to every unnormalised text feature.
    pub text_bias: Option<Param<Tensor<B, 1>>>,
    /// The router `r = W_r f + b_r` (`[D] → [E]`).
    pub router: Option<Linear<B>>,
    #[module(skip)]
    config: MixtureConfig,
}

impl<B: Backend> MixtureOfPrompts<B> {
    /// Builds the mixture, with contexts initialised from `clip`'s token embeddings, `w = 0`, and
    /// the router like PyTorch's `nn.Linear` (`U(±1/√D)`, seeded).
    pub fn new(
        config: MixtureConfig,
        clip: &Clip<B>,
        tokenizer: &ClipTokenizer,
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        config.validate()?;
        let layouts = config
            .experts
            .iter()
            .map(|init| ExpertLayout::counted(init, tokenizer, config.layout.context_count))
            .collect::<Result<Vec<_>, _>>()?;
        let pool = PromptPool::new(layouts, &clip.text, config.seed, device)
            .classifying_without_period(config.layout.classify_without_period);
        let d = clip.config().embed_dim;
        let e = config.experts.len();
        let text_bias = config
            .text_bias
            .then(|| Param::from_tensor(Tensor::zeros([d], device)));
        let router = config
            .router
            .then(|| seeded_linear(d, e, config.seed, device));
        Ok(Self {
            pool,
            text_bias,
            router,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MixtureConfig {
        &self.config
    }

    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.config.experts.len()
    }

    /// The fixed part of all `E × C` prompts for `classnames` (errors when a class name makes a
    /// prompt longer than the context length).
    pub fn class_prompts(
        &self,
        text: &TextEncoder<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<ClassPrompts<B>, PromptError> {
        self.pool.class_prompts(text, tokenizer, classnames, device)
    }

    /// The prompts of the text-level loss for `classnames`: [`Self::class_prompts`] with the
    /// templates' final periods kept even where the classification prompts leave them out.
    pub fn text_loss_prompts(
        &self,
        text: &TextEncoder<B>,
        tokenizer: &ClipTokenizer,
        classnames: &[String],
        device: &B::Device,
    ) -> Result<ClassPrompts<B>, PromptError> {
        self.pool
            .text_loss_prompts(text, tokenizer, classnames, device)
    }

    /// Text-encoder outputs `[rows, D]` made features: `w` added, L2-normalised.
    fn finish(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let features = match &self.text_bias {
            Some(w) => features + w.val().unsqueeze(),
            None => features,
        };
        l2_normalize(features)
    }

    /// Text-encoder outputs of all of `prompts`' rows, in row order, made features `[E, C, D]`.
    fn finish_all(&self, prompts: &ClassPrompts<B>, encoded: Tensor<B, 2>) -> Tensor<B, 3> {
        let z = self.finish(encoded);
        let d = z.dims()[1];
        z.reshape([prompts.experts, prompts.classes(), d])
    }

    /// `z[g, c] = normalize(TextEncoder(P_g(c)) + w)`, `[E, C, D]`, all prompts in one batch
    /// (what a training step needs: gradients reach contexts and `w`).
    pub fn text_features(&self, text: &TextEncoder<B>, prompts: &ClassPrompts<B>) -> Tensor<B, 3> {
        self.text_features_chunked(text, prompts, usize::MAX)
    }

    /// [`Self::text_features`], encoding at most `chunk` prompts at a time (for inference over
    /// many classes).
    pub fn text_features_chunked(
        &self,
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        chunk: usize,
    ) -> Tensor<B, 3> {
        let table = self.pool.table(&prompts.fixed.device());
        let encoded = prompts.encode(text, table, 0, prompts.rows(), chunk);
        self.finish_all(prompts, encoded)
    }

    /// [`Self::text_features`] with the rows split across devices: the rows before the first
    /// shard's on the prompts' device, each shard's on its own (see [`TextShard::split`]). The
    /// features come back to the prompts' device and gradients reach the contexts and `w` through
    /// the device moves, so the result is [`Self::text_features`]'s.
    pub fn text_features_sharded(
        &self,
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        shards: &[TextShard<B>],
    ) -> Tensor<B, 3> {
        let device = prompts.fixed.device();
        let table = self.pool.table(&device);
        // The other devices' shares are queued first: sending them the table reads it here, which
        // would otherwise wait until this device had encoded its own share.
        let remote: Vec<Tensor<B, 2>> = shards.iter().map(|s| s.encode(table.clone())).collect();
        let local = TextShard::first_device_rows(shards, prompts.rows());
        let mut parts = vec![prompts.encode(text, table, 0, local, usize::MAX)];
        parts.extend(remote.into_iter().map(|f| f.to_device(&device)));
        self.finish_all(prompts, Tensor::cat(parts, 0))
    }

    /// [`Self::text_features`] for the experts marked in `needed` only (each expert's prompts
    /// encoded on their own); the other experts' features are zeros. A training step whose gates
    /// leave experts unused need not encode their `C` prompts each (their gates are exactly 0).
    /// Every context still receives a gradient (zero for the unused ones) through the shared
    /// embedding table, so weight decay and momentum see the same step as with
    /// [`Self::text_features`].
    pub fn text_features_of(
        &self,
        text: &TextEncoder<B>,
        prompts: &ClassPrompts<B>,
        needed: &[bool],
    ) -> Tensor<B, 3> {
        let device = prompts.fixed.device();
        let table = self.pool.table(&device);
        let c = prompts.classes();
        let encoded: Vec<Option<Tensor<B, 2>>> = needed
            .iter()
            .enumerate()
            .map(|(g, &on)| {
                on.then(|| self.finish(prompts.encode(text, table.clone(), g * c, c, usize::MAX)))
            })
            .collect();
        let Some(d) = encoded.iter().flatten().next().map(|t| t.dims()[1]) else {
            return self.text_features(text, prompts);
        };
        let parts: Vec<Tensor<B, 2>> = encoded
            .into_iter()
            .map(|t| t.unwrap_or_else(|| Tensor::zeros([c, d], &device)))
            .collect();
        Tensor::cat(parts, 0).reshape([needed.len(), c, d])
    }

    /// Router logits `[N, E]` of L2-normalised image features `[N, D]` (`None` without router).
    pub fn router_logits(&self, f: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.router.as_ref().map(|r| r.forward(f))
    }

    /// Gates `[N, E]` from router logits (top-K softmax), or uniform weights without a router.
    pub fn gates(
        &self,
        router_logits: Option<Tensor<B, 2>>,
        n: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        match router_logits {
            Some(r) => top_k_gates(r, self.config.top_k),
            None => {
                let e = self.num_experts();
                Tensor::ones([n, e], device) / e as f32
            }
        }
    }

    /// Mixture logits `[N, C]`: `scale · <f, Σ_k α_k z[k, c]>`.
    pub fn logits(
        &self,
        f: Tensor<B, 2>,
        z: Tensor<B, 3>,
        gates: Tensor<B, 2>,
        scale: f32,
    ) -> Tensor<B, 2> {
        mix_logits(f, z, gates, self.config.renormalize, scale)
    }

    /// The learned tensors by name (`ctx.<g>` `[n_ctx, W]`, `text_bias` `[D]`, `router.weight`
    /// `[E, D]` as in PyTorch, `router.bias` `[E]`), for checkpoints.
    pub fn tensors(&self) -> Vec<(String, TensorData)> {
        let mut out = Vec::new();
        for (g, ctx) in self.pool.ctx.iter().enumerate() {
            if let Some(ctx) = ctx {
                out.push((format!("ctx.{g}"), ctx.val().into_data()));
            }
        }
        if let Some(w) = &self.text_bias {
            out.push(("text_bias".into(), w.val().into_data()));
        }
        if let Some(router) = &self.router {
            out.push((
                "router.weight".into(),
                router.weight.val().transpose().into_data(),
            ));
            if let Some(b) = &router.bias {
                out.push(("router.bias".into(), b.val().into_data()));
            }
        }
        out
    }

    /// The parameter id of each learned tensor, under the names of [`Self::tensors`]: optimiser
    /// state is keyed by parameter id, so a resumed run maps the saved state onto its own ids.
    pub fn param_ids(&self) -> Vec<(String, ParamId)> {
        let mut out = Vec::new();
        for (g, ctx) in self.pool.ctx.iter().enumerate() {
            if let Some(ctx) = ctx {
                out.push((format!("ctx.{g}"), ctx.id));
            }
        }
        if let Some(w) = &self.text_bias {
            out.push(("text_bias".into(), w.id));
        }
        if let Some(router) = &self.router {
            out.push(("router.weight".into(), router.weight.id));
            if let Some(b) = &router.bias {
                out.push(("router.bias".into(), b.id));
            }
        }
        out
    }

    /// Replaces the learned tensors with saved ones (as written by [`Self::tensors`]); every
    /// tensor the configuration needs must be present with the right shape. Consumed entries are
    /// removed from `saved`.
    pub fn load_tensors(
        mut self,
        saved: &mut BTreeMap<String, TensorData>,
        device: &B::Device,
    ) -> Result<Self, PromptError> {
        let e = self.num_experts();
        let saved_experts: Vec<usize> = saved
            .keys()
            .filter_map(|k| k.strip_prefix("ctx.").and_then(|g| g.parse().ok()))
            .collect();
        let expected_experts: Vec<usize> = self
            .pool
            .ctx
            .iter()
            .enumerate()
            .filter_map(|(g, c)| c.as_ref().map(|_| g))
            .collect();
        let router_rows = saved.get("router.weight").map(|t| t.shape[0]);
        if saved_experts.iter().any(|&g| g >= e) || router_rows.is_some_and(|r| r != e) {
            let found = saved_experts
                .iter()
                .map(|g| g + 1)
                .chain(router_rows)
                .max()
                .unwrap_or(0);
            return Err(PromptError::Checkpoint(format!(
                "wrong number of experts: the checkpoint holds {found} experts, the configuration \
                 has {e}"
            )));
        }
        if saved_experts.len() != expected_experts.len() {
            return Err(PromptError::Checkpoint(format!(
                "wrong number of experts: the checkpoint holds contexts for {} experts, the \
                 configuration needs {}",
                saved_experts.len(),
                expected_experts.len()
            )));
        }
        let saved_bias = saved.contains_key("text_bias");
        let saved_router = saved.contains_key("router.weight");
        let mut take = |name: &str, shape: &[usize]| -> Result<TensorData, PromptError> {
            let data = saved.remove(name).ok_or_else(|| {
                PromptError::Checkpoint(format!("the checkpoint has no tensor '{name}'"))
            })?;
            if data.shape.as_slice() != shape {
                return Err(PromptError::Checkpoint(format!(
                    "checkpoint tensor '{name}' has shape {:?}, the configuration needs {shape:?}",
                    data.shape
                )));
            }
            Ok(data.convert::<f32>())
        };
        let width = self.pool.width();
        let layouts = self.pool.layouts().to_vec();
        for (g, ctx) in self.pool.ctx.iter_mut().enumerate() {
            if let Some(param) = ctx.take() {
                let data = take(&format!("ctx.{g}"), &[layouts[g].n_ctx(), width])?;
                *ctx = Some(replace(param, Tensor::from_data(data, device)));
            }
        }
        if let Some(w) = self.text_bias.take() {
            let d = w.dims()[0];
            self.text_bias = Some(replace(
                w,
                Tensor::from_data(take("text_bias", &[d])?, device),
            ));
        } else if saved_bias {
            return Err(PromptError::Checkpoint(
                "the checkpoint has a text bias but the configuration has none".into(),
            ));
        }
        if let Some(mut router) = self.router.take() {
            let [d, e] = router.weight.dims();
            // Stored as PyTorch's [E, D]; transposed on the host so that the parameter is laid out
            // exactly like a freshly built one (bit-identical results after a reload).
            let stored = take("router.weight", &[e, d])?
                .to_vec::<f32>()
                .map_err(|err| PromptError::Checkpoint(format!("router.weight: {err:?}")))?;
            let transposed: Vec<f32> = (0..d * e).map(|i| stored[(i % e) * d + i / e]).collect();
            let weight = Tensor::from_data(TensorData::new(transposed, [d, e]), device);
            router.weight = replace(router.weight, weight);
            if let Some(b) = router.bias.take() {
                router.bias = Some(replace(
                    b,
                    Tensor::from_data(take("router.bias", &[e])?, device),
                ));
            }
            self.router = Some(router);
        } else if saved_router {
            return Err(PromptError::Checkpoint(
                "the checkpoint has a router but the configuration has none".into(),
            ));
        }
        Ok(self)
    }
}

/// A parameter with a new value, keeping its id and whether it requires gradients.
fn replace<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    value: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    let (id, old, mapper) = param.consume();
    let value = if old.is_require_grad() {
        value.require_grad()
    } else {
        value
    };
    Param::from_mapped_value(id, value, mapper)
}
