//! Scaled dot-product attention over split heads, causal, with an optional padding mask: the part
//! of self-attention every model family shares (GPT-2 and the Llama family differ only in how
//! they make q, k and v).

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::backend::is_flex;
use crate::ops::dropout;
use crate::ops::matmul::matmul;

/// `softmax(q·kᵀ/√d + causal + mask)·v` for `q` `[B, H, T, d]` and `k`, `v` `[B, H, S, d]` (S ≥ T:
/// query `i` sits at absolute position `S - T + i`, so a cache of `S - T` earlier positions is
/// attended to in full). `mask` (`[B, 1, T, S]`, true = may not attend) excludes padding keys.
/// Returns `[B, H, T, d]`; `weights_dropout` applies to the attention weights when active.
pub fn causal(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Option<Tensor<4, Bool>>, weights_dropout: &Dropout) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let s = k.dims()[2];
    // Not every backend broadcasts a mask over heads: give it the full shape.
    let mask = mask.map(|m| m.expand([b, h, t, s]));
    // Dropout on the attention weights needs them materialised (Burn's fused kernel has none).
    // So do the GPU backends: Burn 0.22.1's autotune may pick a flash-attention kernel that
    // then fails to launch for the batch at hand ("No tile size is available for the problem",
    // README, "Backends"). And LibTorch: burn-tch 0.22.1 hands the mask to torch's
    // scaled_dot_product_attention, where true means "may attend" (padded batches would go wrong;
    // tests/it/attention_mask.rs), and torch's `is_causal` aligns a cached step's queries to the
    // first keys, not the last.
    if dropout::active(weights_dropout, &q) || !is_flex(&q.device()) {
        let scores = matmul(q, k.swap_dims(2, 3)).mul_scalar(1.0 / (d as f64).sqrt());
        let future = Tensor::<2, Bool>::tril_mask([t, s], (s - t) as i64, &scores.device()).unsqueeze::<4>();
        let blocked = match mask {
            Some(mask) => mask.bool_or(future.expand([b, h, t, s])),
            None => future,
        };
        let weights = softmax(scores.mask_fill(blocked, f32::NEG_INFINITY), 3);
        return matmul(dropout::forward(weights_dropout, weights), v);
    }
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    attention(q, k, v, mask, None, options)
}

/// Grouped-query attention: each of the `kv_heads` key/value heads serves `heads / kv_heads`
/// query heads. Repeats them (`[B, kv_heads, S, d]` → `[B, heads, S, d]`, head `i` using KV head
/// `i / (heads / kv_heads)`, as transformers' `repeat_kv`) so the product runs as plain
/// multi-head attention.
pub fn repeat_kv(x: Tensor<4>, heads: usize) -> Tensor<4> {
    let [b, kv_heads, s, d] = x.dims();
    if kv_heads == heads {
        return x;
    }
    let group = heads / kv_heads;
    x.unsqueeze_dim::<5>(2).expand([b, kv_heads, group, s, d]).reshape([b, heads, s, d])
}
