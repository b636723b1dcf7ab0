//! Multi-head attention from OpenAI's packed `[q; k; v]` input projection: on the host by
//! `crate::cpu` where it can, through Burn's operations elsewhere.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention as fused_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Tensor, activation};

use crate::cpu;

/// `softmax(q kᵀ / √d) v` per head from the packed projections `qkv` (`[batch, seq, 3·width]`),
/// as `[batch, seq, width]` with the heads side by side; `causal`: a query sees no later key.
pub(crate) fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize, causal: bool) -> Tensor<B, 3> {
    cpu::attention(qkv, heads, causal)
        .unwrap_or_else(|qkv| attention_by_operations(qkv, heads, causal))
}

/// [`attention`] through Burn's operations: under autodiff, for other precisions and on GPU
/// backends (and everywhere without the `cpu` feature). Burn's fused attention kernel, or its
/// matmuls and softmax where `crate::cpu` says those are faster.
pub(super) fn attention_by_operations<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    let [batch, seq, packed] = qkv.dims();
    let width = packed / 3;
    let head_dim = width / heads;
    let out = if cpu::unfused_attention::<B>(&qkv.device()) {
        unfused(qkv, [batch, seq, heads, head_dim], causal)
    } else {
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * width, width)
                .reshape([batch, seq, heads, head_dim])
                .swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        fused_attention(split(0), split(1), split(2), None, None, options)
    };
    out.swap_dims(1, 2).reshape([batch, seq, width])
}

/// `softmax(q kᵀ / √d) v` per head from the packed projections `qkv` (`[batch, seq, 3·width]`), as
/// `[batch, heads, seq, head_dim]`, through batched matmuls and a softmax. q, k and v stay views
/// into `qkv`; the softmax runs in f32, as in the fused kernel.
fn unfused<B: Backend>(
    qkv: Tensor<B, 3>,
    [batch, seq, heads, head_dim]: [usize; 4],
    causal: bool,
) -> Tensor<B, 4> {
    let dtype = qkv.dtype();
    let device = qkv.device();
    // [batch, seq, 3, heads, head_dim] seen as [3, batch, heads, seq, head_dim].
    let qkv = qkv
        .reshape([batch, seq, 3, heads, head_dim])
        .permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1);
    let mut scores = part(0)
        .matmul(part(1).swap_dims(3, 4))
        .cast(FloatDType::F32)
        .mul_scalar((head_dim as f32).powf(-0.5));
    if causal {
        let future = Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, &device);
        let bias = Tensor::<B, 2>::zeros([seq, seq], &device).mask_fill(future, f32::NEG_INFINITY);
        scores = scores + bias.unsqueeze::<5>();
    }
    activation::softmax(scores, 4)
        .cast(dtype)
        .matmul(part(2))
        .reshape([batch, heads, seq, head_dim])
}
