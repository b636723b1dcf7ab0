//! The loss terms of MoCoOp, each a scalar tensor `[1]`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, activation};

use crate::config::{GateTarget, KgDistance};

/// Mean cross-entropy of logits `[N, C]` against labels `[N]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = labels.dims()[0];
    let log_p = activation::log_softmax(logits, 1);
    -log_p.gather(1, labels.reshape([n, 1])).mean()
}

/// Grouped text-level supervision: for every expert `g` and class `c`, an InfoNCE over the classes
/// of group `g`, `−log softmax_e(<z[g,c], p[g,e]> / τ)[c]`, averaged over `g` and `c`.
///
/// `z`, `p`: `[E, C, D]`, L2-normalised.
pub fn text_loss<B: Backend>(z: Tensor<B, 3>, p: Tensor<B, 3>, tau: f32) -> Tensor<B, 1> {
    let [e, c, _] = z.dims();
    let sims = z.matmul(p.swap_dims(1, 2)) / tau; // [E, C, C]
    let log_p = activation::log_softmax(sims, 2);
    let eye = Tensor::<B, 2>::eye(c, &log_p.device()).reshape([1, c, c]);
    -(log_p * eye).sum() / (e * c) as f32
}

/// LASP's text-to-text loss: each template's class feature `h[t, c]` is classified among the one
/// soft prompt's class features `z[c']`, `−log softmax_c'(<h[t, c], z[c']> / τ)[c]`, averaged over
/// templates and classes. It is [`text_loss`] with the roles exchanged: the templates are the
/// queries, the soft prompt (repeated for every template) the keys.
///
/// `z`: `[1, C, D]`, `h`: `[T, C, D]`, both L2-normalised.
pub fn template_text_loss<B: Backend>(z: Tensor<B, 3>, h: Tensor<B, 3>, tau: f32) -> Tensor<B, 1> {
    let dims = h.dims();
    text_loss(h, z.expand(dims), tau)
}

/// A dense 0/1 mask `[N, E]` of each row's `k` largest values (on detached values).
pub fn top_k_mask<B: Backend>(values: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [n, e] = values.dims();
    let device = values.device();
    if k >= e {
        return Tensor::ones([n, e], &device);
    }
    let selected = values.detach().argsort_descending(1).narrow(1, 0, k);
    Tensor::<B, 2>::zeros([n, e], &device).scatter(
        1,
        selected,
        Tensor::ones([n, k], &device),
        burn::tensor::IndexingUpdateOp::Add,
    )
}

/// Gating target `q` `[N, E]` from the image-prototype affinities `a` `[N, E]`: equal mass on the
/// `k` largest, or the published code's `softmax(a + 10·[top-k])`.
pub fn gate_target<B: Backend>(a: Tensor<B, 2>, k: usize, form: GateTarget) -> Tensor<B, 2> {
    let mask = top_k_mask(a.clone(), k);
    match form {
        GateTarget::TopKUniform => mask / k as f32,
        GateTarget::SoftmaxBoost => activation::softmax(a + mask * 10.0, 1),
    }
}

/// Hard-prompt-guided gating loss: `−Σ_g q_g log softmax(r)_g`, averaged over the batch.
pub fn gate_loss<B: Backend>(router_logits: Tensor<B, 2>, q: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_p = activation::log_softmax(router_logits, 1);
    -(q * log_p).sum_dim(1).mean()
}

/// Switch-Transformer load balancing `E · Σ_g load_g · importance_g`, with `load_g` the fraction
/// of the batch's top-K slots routed to `g` and `importance_g` the mean router probability of
/// `g`. Also returns `load` `[E]`.
pub fn load_balance<B: Backend>(
    router_logits: Tensor<B, 2>,
    k: usize,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n, e] = router_logits.dims();
    let load = top_k_mask(router_logits.clone(), k).sum_dim(0).reshape([e]) / (n * k.min(e)) as f32;
    let importance = activation::softmax(router_logits, 1)
        .mean_dim(0)
        .reshape([e]);
    let loss = (load.clone() * importance).sum() * e as f32;
    (loss, load)
}

/// `KL(softmax(teacher) ‖ softmax(student))`, averaged over the batch.
pub fn distillation<B: Backend>(student: Tensor<B, 2>, teacher: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_t = activation::log_softmax(teacher.detach(), 1);
    let log_s = activation::log_softmax(student, 1);
    (log_t.clone().exp() * (log_t - log_s)).sum_dim(1).mean()
}

/// The mean absolute difference of two feature matrices of one shape (PyTorch's `l1_loss` with
/// its `mean` reduction; PromptSRC's agreement with frozen CLIP).
pub fn mean_absolute<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    (a - b).abs().mean()
}

/// Mean entropy (nats) of the rows of a probability matrix `[N, E]`.
pub fn mean_entropy<B: Backend>(p: Tensor<B, 2>) -> Tensor<B, 1> {
    -(p.clone() * p.clamp_min(1e-12).log()).sum_dim(1).mean()
}

/// Number of rows whose argmax is the label, as a float `[1]`.
pub fn correct<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let n = labels.dims()[0];
    logits.argmax(1).reshape([n]).equal(labels).float().sum()
}

/// KgCoOp's knowledge guidance: the distance of each expert's class text features `z` `[E, C, D]`
/// from the hand-made prompt's `t` `[C, D]` (both L2-normalised), averaged over experts and
/// classes: `1 − cos`, or the squared L2 distance.
pub fn knowledge_guidance<B: Backend>(
    z: Tensor<B, 3>,
    t: Tensor<B, 2>,
    distance: KgDistance,
) -> Tensor<B, 1> {
    let [e, c, d] = z.dims();
    let t = t.reshape([1, c, d]);
    let per_class = match distance {
        KgDistance::Cosine => -(z * t).sum_dim(2) + 1.0,
        KgDistance::SquaredL2 => (z - t).powi_scalar(2).sum_dim(2),
    };
    per_class.reshape([e * c]).mean()
}

/// ProGrad's distillation from zero-shot logits `teacher` at temperature `temp`:
/// `T² · mean_n Σ_c −softmax(teacher/T) · log softmax(student/T)` (a cross-entropy with the
/// teacher's soft targets, as the official code computes it).
pub fn soft_target_ce<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    temp: f32,
) -> Tensor<B, 1> {
    let p_t = activation::softmax(teacher.detach() / temp, 1);
    let log_s = activation::log_softmax(student / temp, 1);
    -(p_t * log_s).sum_dim(1).mean() * (temp * temp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn v<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_data([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], &device);
        let labels = Tensor::<B, 1, Int>::from_data([1, 0], &device);
        let l0 = -(2f32.exp() / (1f32.exp() + 2f32.exp() + 1.0)).ln();
        let l1 = -(1.0 / (2.0 + 3f32.exp())).ln();
        let got = v(cross_entropy(logits.clone(), labels.clone()))[0];
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-6);
        assert_eq!(v(correct(logits, labels))[0], 1.0);
    }

    #[test]
    fn gate_targets_and_load_balance() {
        let device = Default::default();
        let a = Tensor::<B, 2>::from_data([[0.1, 0.5, 0.3, 0.2], [0.9, 0.0, 0.1, 0.8]], &device);
        assert_eq!(
            v(gate_target(a.clone(), 2, GateTarget::TopKUniform)),
            [0.0, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.5]
        );
        let soft = v(gate_target(a.clone(), 2, GateTarget::SoftmaxBoost));
        // softmax(a + 10·[top-k]): ≈ softmax of a over the top-k, ~e^-10 elsewhere.
        assert!((soft[1] / soft[2] - 0.2f32.exp()).abs() < 1e-4, "{soft:?}");
        assert!(
            soft[0] < 1e-4 && (soft[1] + soft[2] - 1.0).abs() < 1e-4,
            "{soft:?}"
        );
        let (lb, load) = load_balance(a.clone(), 2);
        assert_eq!(v(load), [0.25, 0.25, 0.25, 0.25]);
        // Uniform load: E · Σ load · importance = Σ importance = 1.
        assert!((v(lb)[0] - 1.0).abs() < 1e-6);
        let q = gate_target(a.clone(), 2, GateTarget::TopKUniform);
        let loss = v(gate_loss(a.clone(), q))[0];
        let row0: f32 = [0.1f32, 0.5, 0.3, 0.2].iter().map(|x| x.exp()).sum();
        let row1: f32 = [0.9f32, 0.0, 0.1, 0.8].iter().map(|x| x.exp()).sum();
        let expected = -0.5 * ((0.5 - row0.ln()) + (0.3 - row0.ln()))
            - 0.5 * ((0.9 - row1.ln()) + (0.8 - row1.ln()));
        assert!(
            (loss - expected / 2.0).abs() < 1e-5,
            "{loss} vs {}",
            expected / 2.0
        );
    }

    #[test]
    fn text_loss_and_distillation() {
        let device = Default::default();
        // Two experts, two classes, D = 2: z == p gives the InfoNCE of the cosine matrix.
        let p = Tensor::<B, 3>::from_data(
            [[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, 0.6]]],
            &device,
        );
        let got = v(text_loss(p.clone(), p.clone(), 0.5))[0];
        let l_first = -(2f32.exp() / (2f32.exp() + 1.0)).ln();
        let s = 0.96f32 / 0.5;
        let l_second = -(2f32.exp() / (2f32.exp() + s.exp())).ln();
        assert!((got - (2.0 * l_first + 2.0 * l_second) / 4.0).abs() < 1e-5);
        // LASP's direction: the templates classify among the soft prompt's classes.
        let z = Tensor::<B, 3>::from_data([[[1.0, 0.0], [0.6, 0.8]]], &device);
        let h = Tensor::<B, 3>::from_data([[[0.0, 1.0], [0.0, 1.0]]], &device);
        let got = v(template_text_loss(z, h, 0.5))[0];
        let l_c0 = -(0f32.exp() / (0f32.exp() + 1.6f32.exp())).ln();
        let l_c1 = -(1.6f32.exp() / (0f32.exp() + 1.6f32.exp())).ln();
        assert!((got - (l_c0 + l_c1) / 2.0).abs() < 1e-5, "{got}");
        let x = Tensor::<B, 2>::from_data([[1.0, 2.0, 3.0]], &device);
        assert!(v(distillation(x.clone(), x.clone()))[0].abs() < 1e-6);
        assert!(v(distillation(x.clone(), x * 2.0))[0] > 0.0);
    }
}
