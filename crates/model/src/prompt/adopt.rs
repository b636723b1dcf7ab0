//! A mixture taking over another mixture's tensors wherever their shapes match, as the official
//! MoCoOp code's `MoCoOp.load_model` does when a run is evaluated under another dataset
//! configuration (ImageNet's 20 groups into a domain target's 16): it loads each tensor by name
//! and keeps only those whose shape matches, every other one keeping its fresh initialisation.
//! Its names are per expert `ctx_before_<g>` and `ctx_after_<g>` (the contexts before and after
//! the class name), `w` and the router's `gate.weight` and `gate.bias`.

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::mixture::MixtureOfPrompts;

/// One expert's context before and after the class name (`None` for an empty part).
fn context_parts<B: Backend>(mixture: &MixtureOfPrompts<B>, g: usize) -> [Option<Tensor<B, 2>>; 2] {
    let layout = &mixture.pool.layouts()[g];
    let Some(ctx) = &mixture.pool.ctx[g] else {
        return [None, None];
    };
    let ctx = ctx.val();
    let part = |start: usize, len: usize| (len > 0).then(|| ctx.clone().narrow(0, start, len));
    [part(0, layout.before), part(layout.before, layout.after)]
}

/// Whether two optional tensors have the same shape (two absent ones do: `[0, W]` in PyTorch).
fn same_shape<B: Backend, const D: usize>(
    a: &Option<Tensor<B, D>>,
    b: &Option<Tensor<B, D>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.dims() == b.dims(),
        (None, None) => true,
        _ => false,
    }
}

impl<B: Backend> MixtureOfPrompts<B> {
    /// This (freshly initialised) mixture with `source`'s tensors wherever name and shape match
    /// (see the module documentation); returns it and the official names of the tensors left at
    /// their fresh initialisation.
    pub fn adopt_matching(mut self, source: &MixtureOfPrompts<B>) -> (Self, Vec<String>) {
        let mut dropped = Vec::new();
        for g in 0..self.num_experts() {
            let ours = context_parts(&self, g);
            let theirs = if g < source.num_experts() {
                context_parts(source, g)
            } else {
                [None, None]
            };
            let mut parts = Vec::new();
            for (k, side) in ["before", "after"].iter().enumerate() {
                let matches = g < source.num_experts() && same_shape(&ours[k], &theirs[k]);
                if !matches {
                    dropped.push(format!("ctx_{side}_{g}"));
                }
                let chosen = if matches { &theirs[k] } else { &ours[k] };
                parts.extend(chosen.clone());
            }
            if self.pool.ctx[g].is_some() {
                self.pool.ctx[g] = Some(Param::from_tensor(Tensor::cat(parts, 0)));
            }
        }
        match (&self.text_bias, &source.text_bias) {
            (Some(w), Some(theirs)) if w.dims() == theirs.dims() => {
                self.text_bias = Some(Param::from_tensor(theirs.val()));
            }
            (Some(_), _) => dropped.push("w".into()),
            (None, _) => {}
        }
        if let Some(router) = self.router.as_mut() {
            match &source.router {
                Some(theirs) if theirs.weight.dims() == router.weight.dims() => {
                    router.weight = Param::from_tensor(theirs.weight.val());
                    router.bias = theirs.bias.as_ref().map(|b| Param::from_tensor(b.val()));
                }
                _ => dropped.extend(["gate.weight".to_string(), "gate.bias".to_string()]),
            }
        }
        (self, dropped)
    }
}
