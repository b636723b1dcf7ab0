//! burn-train's training and validation steps for [`MocoopModel`], and the optimiser step with
//! global-norm gradient clipping and a separate learning rate for the image LayerNorms.

use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, activation};
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};

use mocoop_data::ImageBatch;
use mocoop_model::clip::{VisionEncoder, cpu_parts, l2_normalize, tracks_gradients};

use crate::config::{ProGradConfig, ProjectionScope};
use crate::image_parts::ImageParts;
use crate::loss_scale::LossScale;
use crate::losses;
use crate::model::{MocoopModel, StepState, StepTerms};

/// What a step reports, already on the host (one small read-back per step).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Images in the batch.
    pub batch: usize,
    /// `loss`, each loss term (`ce`, `text`, `gate`, `lb`, `kd`, `kg`, `kl`), `accuracy` (%), and
    /// `router_entropy` (nats) when there is a router.
    pub values: Vec<(&'static str, f64)>,
    /// Fraction of the batch's top-K slots that went to each expert (empty without router).
    pub loads: Vec<f64>,
}

impl StepOutput {
    /// A reported value by key.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Whether the step's loss is finite (a step whose loss is not stops training unapplied).
    pub fn loss_is_finite(&self) -> bool {
        self.value("loss").is_some_and(f64::is_finite)
    }
}

impl ItemLazy for StepOutput {
    type ItemSync = StepOutput;

    fn sync(self) -> StepOutput {
        self
    }
}

/// Reads the step's scalars back in one transfer.
pub fn host_output<B: Backend>(
    terms: &StepTerms<B>,
    labels: Tensor<B, 1, Int>,
    top_k: usize,
) -> StepOutput {
    let n = labels.dims()[0];
    let mut names: Vec<&'static str> = vec!["loss"];
    let mut parts = vec![terms.loss.clone().detach()];
    for (name, term) in &terms.terms {
        names.push(name);
        parts.push(term.clone().detach());
    }
    names.push("accuracy");
    parts.push(losses::correct(terms.logits.clone().detach(), labels));
    let mut experts = 0;
    if let Some(r) = &terms.router_logits {
        let r = r.clone().detach();
        let e = r.dims()[1];
        names.push("router_entropy");
        parts.push(losses::mean_entropy(activation::softmax(r.clone(), 1)));
        let k = top_k.min(e);
        parts.push(losses::top_k_mask(r, k).sum_dim(0).reshape([e]) / (n * k) as f32);
        experts = e;
    }
    let host = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 scalars");
    let mut values: Vec<(&'static str, f64)> = names
        .iter()
        .zip(&host)
        .map(|(name, v)| (*name, f64::from(*v)))
        .collect();
    if let Some(acc) = values.iter_mut().find(|(k, _)| *k == "accuracy") {
        acc.1 = acc.1 / n as f64 * 100.0;
    }
    let loads = host[host.len() - experts..]
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    StepOutput {
        batch: n,
        values,
        loads,
    }
}

/// A training step's values read back ([`host_output`]), with the f16 loss scale it ran at.
pub(crate) fn read_back<B: Backend>(
    terms: &StepTerms<B>,
    labels: Tensor<B, 1, Int>,
    top_k: usize,
    loss_scale: Option<LossScale>,
) -> StepOutput {
    let mut output = host_output(terms, labels, top_k);
    if let Some(s) = loss_scale {
        output.values.push(("loss_scale", f64::from(s.scale)));
    }
    output
}

/// The read-back and gradients of a one-prompt method's step (CoCoOp's, the deep-prompt
/// methods'), whose loss is one backward pass through `module`: the loss weighted by the batch's
/// `share` and the loss scale; `None` gradients when it is not finite.
pub(crate) fn backward_once<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    terms: StepTerms<B>,
    labels: Tensor<B, 1, Int>,
    share: f32,
    loss_scale: Option<LossScale>,
) -> (StepOutput, Option<GradientsParams>) {
    let output = read_back(&terms, labels, 1, loss_scale);
    if !output.loss_is_finite() {
        return (output, None);
    }
    let factor = share * loss_scale.map_or(1.0, |s| s.scale);
    let grads = GradientsParams::from_grads((terms.loss * factor).backward(), module);
    (output, Some(grads))
}

impl<B: Backend> MocoopModel<B> {
    /// Trainable parameter ids by rank: 1-D (bias, router bias, LayerNorms) and 2-D (contexts,
    /// router weight).
    pub fn trainable_ids(&self) -> (Vec<ParamId>, Vec<ParamId>) {
        let mut one = Vec::new();
        let mut two: Vec<ParamId> = self
            .mixture
            .pool
            .ctx
            .iter()
            .flatten()
            .map(|p| p.id)
            .collect();
        if let Some(w) = &self.mixture.text_bias {
            one.push(w.id);
        }
        if let Some(r) = &self.mixture.router {
            two.push(r.weight.id);
            if let Some(b) = &r.bias {
                one.push(b.id);
            }
        }
        one.extend(self.ln_param_ids());
        (one, two)
    }
}

/// The sum of squares of every gradient among `one` and `two`, on the device (`None` without
/// gradients).
fn square_sum<B: Backend>(
    grads: &GradientsParams,
    one: &[ParamId],
    two: &[ParamId],
) -> Option<Tensor<B, 1>> {
    let ones = one
        .iter()
        .filter_map(|id| grads.get::<B, 1>(*id))
        .map(|g| g.square().sum());
    let twos = two
        .iter()
        .filter_map(|id| grads.get::<B, 2>(*id))
        .map(|g| g.square().sum());
    ones.chain(twos).reduce(|a, b| a + b)
}

/// Multiplies every gradient among `one` and `two` by the one-element `factor`.
fn scale_grads<B: Backend>(
    grads: &mut GradientsParams,
    one: &[ParamId],
    two: &[ParamId],
    factor: Tensor<B, 1>,
) {
    for id in one {
        if let Some(g) = grads.remove::<B, 1>(*id) {
            grads.register(*id, g * factor.clone());
        }
    }
    for id in two {
        if let Some(g) = grads.remove::<B, 2>(*id) {
            grads.register(*id, g * factor.clone().unsqueeze::<2>());
        }
    }
}

/// Scales every gradient so that their joint L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)`, capped at 1). Computed on the device.
pub fn clip_global_norm<B: Backend>(
    grads: &mut GradientsParams,
    one: &[ParamId],
    two: &[ParamId],
    max_norm: f32,
) {
    let Some(total) = square_sum::<B>(grads, one, two) else {
        return;
    };
    let coef = (total.sqrt() + 1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    scale_grads(grads, one, two, coef);
}

/// Divides loss-scaled gradients by `scale`; `false` (and the gradients are dropped, so the step
/// is skipped) when they are not finite, i.e. when the sum of their squares is not (a scaled
/// gradient norm above 1.8e19 counts as an overflow too).
fn unscale<B: Backend>(
    grads: &mut GradientsParams,
    one: &[ParamId],
    two: &[ParamId],
    scale: f32,
) -> bool {
    let Some(total) = square_sum::<B>(grads, one, two) else {
        return true;
    };
    let device = total.device();
    let finite = total.into_scalar().elem::<f32>().is_finite();
    if finite {
        let factor = Tensor::<B, 1>::from_floats([1.0 / scale], &device);
        scale_grads(grads, one, two, factor);
    } else {
        *grads = GradientsParams::new();
    }
    finite
}

/// The normalised features `[N, D]` of images through a frozen image encoder: run on the inner
/// backend, since it records no graph either way (outside autodiff its activations and attention
/// run as the fused loops of Burn's CPU backend).
pub(crate) fn frozen_image_features<B: AutodiffBackend>(
    vision: &VisionEncoder<B>,
    images: Tensor<B, 4>,
) -> Tensor<B, 2> {
    Tensor::from_inner(l2_normalize(vision.valid().forward(images.inner())))
}

/// The dot products `(G_ce·G_kl, G_kl·G_kl)` of one tensor or of a scope of them.
type Dots<B> = (Tensor<B, 1>, Tensor<B, 1>);

/// `a · b` and `b · b` of the gradients of one tensor `id` (rank `D`) in `ce` and `kl`, if both
/// have it.
fn dots<B: Backend, const D: usize>(
    ce: &GradientsParams,
    kl: &GradientsParams,
    id: ParamId,
) -> Option<Dots<B>> {
    let (a, b) = (ce.get::<B, D>(id)?, kl.get::<B, D>(id)?);
    Some(((a * b.clone()).sum(), b.square().sum()))
}

/// `G_ce − λ · min(G_ce·G_kl, 0) / |G_kl|² · G_kl` for the tensor `id` of rank `D`, with the dot
/// products `(ab, bb)` of its scope (the tensor's own, or every tensor's).
fn project_one<B: Backend, const D: usize>(
    ce: &mut GradientsParams,
    kl: &GradientsParams,
    id: ParamId,
    (ab, bb): Dots<B>,
    lambda: f32,
) {
    let (Some(a), Some(b)) = (ce.remove::<B, D>(id), kl.get::<B, D>(id)) else {
        return;
    };
    let coef = (ab.clamp_max(0.0) / bb.clamp_min(1e-30)) * lambda;
    let shape = [1; D];
    ce.register(id, a - b * coef.reshape(shape));
}

/// ProGrad's update (see [`crate::config::ProGradConfig`]): the cross-entropy gradients `ce`,
/// each projected off the distillation's `kl` where they point against it, per tensor or over
/// every tensor of `one` (rank 1) and `two` (rank 2) at once. Computed on the device, without a
/// branch: a non-negative dot product projects nothing.
fn project<B: Backend>(
    mut ce: GradientsParams,
    kl: &GradientsParams,
    one: &[ParamId],
    two: &[ParamId],
    prograd: &ProGradConfig,
) -> GradientsParams {
    let per_tensor: Vec<(ParamId, usize, Dots<B>)> = one
        .iter()
        .filter_map(|&id| Some((id, 1, dots::<B, 1>(&ce, kl, id)?)))
        .chain(
            two.iter()
                .filter_map(|&id| Some((id, 2, dots::<B, 2>(&ce, kl, id)?))),
        )
        .collect();
    let global = (prograd.scope == ProjectionScope::Global)
        .then(|| {
            per_tensor
                .iter()
                .map(|(_, _, d)| d.clone())
                .reduce(|(a, b), (c, d)| (a + c, b + d))
        })
        .flatten();
    for (id, rank, own) in per_tensor {
        let scope = global.clone().unwrap_or(own);
        if rank == 1 {
            project_one::<B, 1>(&mut ce, kl, id, scope, prograd.lambda);
        } else {
            project_one::<B, 2>(&mut ce, kl, id, scope, prograd.lambda);
        }
    }
    ce
}

impl<B: AutodiffBackend> MocoopModel<B> {
    /// Forward, read-back and backward of one training step; `None` gradients when the loss is
    /// not finite (the training loop then stops without applying the step).
    ///
    /// The loss is weighted by the batch's [`ImageBatch::share`] before the backward pass, so that
    /// the gradients of a step split across devices sum to those of the whole batch.
    pub fn train_step(&self, batch: ImageBatch<B>) -> (StepOutput, Option<GradientsParams>) {
        let noise = self.router_noise(self.state.steps, &batch.indices, &batch.images.device());
        let (features, parts) = self.step_features(batch.images);
        // ProGrad's second pass starts from the same features and noise.
        let again = self
            .settings
            .loss
            .prograd
            .as_ref()
            .map(|prograd| (prograd, features.clone(), noise.clone()));
        let terms = self.forward_features(features, batch.labels.clone(), noise, true);
        let unrouted = self.unrouted_experts(&terms.gates);
        let loss_scale = self.state.loss_scale;
        let top_k = self.mixture.config().top_k;
        let output = read_back(&terms, batch.labels.clone(), top_k, loss_scale);
        if !output.loss_is_finite() {
            return (output, None);
        }
        let factor = batch.share * loss_scale.map_or(1.0, |s| s.scale);
        let grads = (terms.loss * factor).backward();
        let grads = match parts {
            Some(parts) => parts.backward(grads, self),
            None => GradientsParams::from_grads(grads, self),
        };
        let grads = match again {
            // The graph of the first pass is gone with its backward pass: the text side runs again
            // for the distillation's gradient (the image features need no graph: ProGrad does not
            // tune the image LayerNorms).
            Some((prograd, features, noise)) => {
                let terms = self.forward_features(features, batch.labels, noise, true);
                let kl = terms.term("kl").expect("ProGrad's step computes kl");
                let kl = GradientsParams::from_grads((kl * factor).backward(), self);
                let (one, two) = self.trainable_ids();
                project::<B::InnerBackend>(grads, &kl, &one, &two, prograd)
            }
            None => grads,
        };
        (output, Some(self.without_experts(grads, &unrouted)))
    }

    /// The experts no image of the step is routed to, when they must not be updated: with
    /// `text_routed_only` (the official code below batch size 4), they enter the step as zeros,
    /// so their contexts take no part in it and PyTorch's SGD passes over them (no weight decay,
    /// no momentum), where the zero gradient they get here would still move them.
    fn unrouted_experts(&self, gates: &Tensor<B, 2>) -> Vec<usize> {
        if !self.settings.loss.text_routed_only {
            return Vec::new();
        }
        let used = crate::model::experts_in_use(gates).unwrap_or_default();
        (0..used.len()).filter(|&g| !used[g]).collect()
    }

    /// `grads` without those of the contexts of `experts`, which the optimiser then leaves alone.
    fn without_experts(&self, mut grads: GradientsParams, experts: &[usize]) -> GradientsParams {
        for &g in experts {
            if let Some(Some(ctx)) = self.mixture.pool.ctx.get(g) {
                grads.remove::<B::InnerBackend, 2>(ctx.id);
            }
        }
        grads
    }

    /// The normalised image features of a training batch, and the parts they were computed in
    /// when the image side is split ([`ImageParts`]: LN tuning on Burn's CPU backend). A frozen
    /// encoder runs on the inner backend: it records no graph either way, and outside autodiff its
    /// activations and attention run as the fused loops of Burn's CPU backend
    /// (`mocoop_model`'s `cpu` module). Public so that `mocoop bench --breakdown` times the
    /// image side the way a step runs it.
    pub fn step_features(&self, images: Tensor<B, 4>) -> (Tensor<B, 2>, Option<ImageParts<B>>) {
        let vision = &self.clip.vision;
        if self.settings.cached_features {
            (self.image_features(images, true), None)
        } else if let Some(parts) = ImageParts::encode(
            vision,
            &images,
            cpu_parts::<B>(&images.device(), images.dims()[0]),
        ) {
            (parts.features(), Some(parts))
        } else if tracks_gradients(vision) {
            (self.image_features(images, true), None)
        } else {
            (frozen_image_features(vision, images), None)
        }
    }

    /// Applies gradients: unscaling (f16 runs: a step whose gradients are not finite is skipped
    /// and the loss scale lowered), global-norm clipping over every trainable gradient, then SGD on the
    /// prompts/router/bias at `lr` and on the image LayerNorms at `lr × ln_lr_scale` (at `lr`
    /// itself when `lr` is the warm-up rate that every group trains at, see
    /// `StepSettings::warmup_lr_all_groups`) (the same optimiser, stepped twice with disjoint
    /// gradients; its state is kept per parameter). Counts the step in [`MocoopModel::state`].
    ///
    /// `BB` is the optimiser's backend: burn-train's [`TrainStep::optimize`] names it separately
    /// from `B`, though they are the same.
    pub fn apply_grads<BB, O>(self, optim: &mut O, lr: f64, grads: GradientsParams) -> Self
    where
        BB: AutodiffBackend,
        O: Optimizer<Self, BB>,
        Self: AutodiffModule<BB>,
    {
        let (one, two) = self.trainable_ids();
        let update = Update {
            one,
            two,
            clip_norm: self.settings.clip_norm,
            slow: (self.ln_param_ids(), self.ln_lr_factor(lr)),
        };
        let state = self.state;
        let (mut model, state) = sgd_update(self, state, optim, lr, grads, update);
        model.state = state;
        model
    }
}

impl<B: AutodiffBackend> MocoopModel<B> {
    /// The image LayerNorms' share of the learning rate `lr`: `ln_lr_scale`, or 1 at the warm-up
    /// rate when every group warms up at it (the schedule gives exactly that rate in warm-up).
    fn ln_lr_factor(&self, lr: f64) -> f64 {
        match self.settings.warmup_lr_all_groups {
            Some(warmup) if warmup == lr => 1.0,
            _ => self.settings.ln_lr_scale,
        }
    }
}

/// What the optimiser step of a method needs besides its gradients.
pub(crate) struct Update {
    /// Trainable parameter ids of rank 1.
    pub(crate) one: Vec<ParamId>,
    /// Trainable parameter ids of rank 2.
    pub(crate) two: Vec<ParamId>,
    /// Global gradient-norm clipping threshold.
    pub(crate) clip_norm: Option<f32>,
    /// Parameters trained at `lr ×` the factor (MoCoOp's image LayerNorms), and the factor.
    pub(crate) slow: (Vec<ParamId>, f64),
}

impl Update {
    /// Every trainable parameter (`(rank 1, rank 2)` ids) at the one rate: a one-prompt method's
    /// update (CoCoOp's, the deep-prompt methods').
    pub(crate) fn plain((one, two): (Vec<ParamId>, Vec<ParamId>), clip_norm: Option<f32>) -> Self {
        Self {
            one,
            two,
            clip_norm,
            slow: (Vec::new(), 1.0),
        }
    }
}

/// The optimiser step every method shares: unscaling (f16 runs: a step whose gradients are not
/// finite is skipped and the loss scale lowered), global-norm clipping over every trainable
/// gradient, then the optimiser at `lr`, and again at `lr × factor` for the slow parameters (the
/// same optimiser stepped twice with disjoint gradients; its state is kept per parameter).
/// Returns the model and `state` with the step counted.
pub(crate) fn sgd_update<BB, M, O>(
    model: M,
    mut state: StepState,
    optim: &mut O,
    lr: f64,
    mut grads: GradientsParams,
    update: Update,
) -> (M, StepState)
where
    BB: AutodiffBackend,
    O: Optimizer<M, BB>,
    M: AutodiffModule<BB>,
{
    let Update {
        one,
        two,
        clip_norm,
        slow: (slow, factor),
    } = update;
    if let Some(scale) = &mut state.loss_scale
        && !grads.is_empty()
    {
        let finite = unscale::<BB::InnerBackend>(&mut grads, &one, &two, scale.scale);
        scale.update(finite);
    }
    state.steps += 1;
    if grads.is_empty() {
        return (model, state);
    }
    if let Some(max_norm) = clip_norm {
        clip_global_norm::<BB::InnerBackend>(&mut grads, &one, &two, max_norm);
    }
    let mut slow_grads = GradientsParams::new();
    for id in slow {
        if let Some(g) = grads.remove::<BB::InnerBackend, 1>(id) {
            slow_grads.register(id, g);
        }
    }
    let mut model = optim.step(lr, model, grads);
    if !slow_grads.is_empty() {
        model = optim.step(lr * factor, model, slow_grads);
    }
    (model, state)
}

impl<B: AutodiffBackend> TrainStep for MocoopModel<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<StepOutput> {
        let (item, grads) = self.train_step(batch);
        TrainOutput {
            grads: grads.unwrap_or_default(),
            item,
        }
    }

    fn optimize<BB, O>(self, optim: &mut O, lr: f64, grads: GradientsParams) -> Self
    where
        BB: AutodiffBackend,
        O: Optimizer<Self, BB>,
        Self: AutodiffModule<BB>,
    {
        self.apply_grads(optim, lr, grads)
    }
}

impl<B: Backend> InferenceStep for MocoopModel<B> {
    type Input = ImageBatch<B>;
    type Output = StepOutput;

    fn step(&self, batch: ImageBatch<B>) -> StepOutput {
        let terms = self.forward(batch.images, batch.labels.clone(), None, false);
        host_output(&terms, batch.labels, self.mixture.config().top_k)
    }
}
