//! Causal multi-head self-attention with a fused q/k/v projection (HF `c_attn`, with bias).

use burn::module::Module;
use burn::nn::{Dropout, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::backend::kernels;
use crate::models::kv_cache::LayerKvCache;
use crate::ops::{self, dropout};

#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// `[n_embd, 3 * n_embd]`: the outputs are `[q | k | v]`; head `h` is columns `h*hd .. (h+1)*hd` of each.
    pub c_attn: Linear,
    /// Output projection `[n_embd, n_embd]` (a residual projection: its init is scaled down).
    pub c_proj: Linear,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    pub n_head: usize,
}

impl CausalSelfAttention {
    /// `x`: `[B, T, C]`. With a cache, the T new positions attend to everything cached before them
    /// and the cache grows by T. `mask` (`[B, 1, T, S]`, true = may not attend) excludes padding keys;
    /// causality is always applied on top of it.
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKvCache>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let (h, hd) = (self.n_head, c / self.n_head);
        let qkv = ops::linear(&self.c_attn, x);
        // On the CPU without cache or padding mask (training, a frozen prefix, a forward pass): one
        // fused op from qkv to the merged heads. Burn's attention would split the heads into copies
        // and compute the whole T×T square in f32 whatever the products' precision.
        if cache.is_none() && mask.is_none() {
            // The weights' dropout mask, drawn as `dropout::forward` would draw it for [B, H, T, T].
            let keep_mask = dropout::flex_mask(&self.attn_dropout, b * h * t * t, &qkv.device());
            if let Some(y) = kernels::causal_attention(&qkv, h, keep_mask) {
                return dropout::forward(&self.resid_dropout, ops::linear(&self.c_proj, y));
            }
        }
        let split_heads = |z: Tensor<3>| z.reshape([b, t, h, hd]).swap_dims(1, 2); // [B, H, T, hd]
        let q = split_heads(qkv.clone().narrow(2, 0, c));
        let mut k = split_heads(qkv.clone().narrow(2, c, c));
        let mut v = split_heads(qkv.narrow(2, 2 * c, c));
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
        }
        let y = ops::attention::causal(q, k, v, mask, &self.attn_dropout);
        let y = y.swap_dims(1, 2).reshape([b, t, c]);
        dropout::forward(&self.resid_dropout, ops::linear(&self.c_proj, y))
    }

    /// The output at the last position only, `[B, 1, C]`, of `x` `[B, T, C]` (no cache, no
    /// padding): what a classifier reading the last token needs. Keys and values still come from
    /// every position, but the query, the attention row and the output projection are one
    /// position's, and the query third of `c_attn` is applied to one row instead of T.
    pub fn forward_last(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let (h, hd) = (self.n_head, c / self.n_head);
        let weight = self.c_attn.weight.val(); // [C, 3C]: q | k | v
        let bias = self.c_attn.bias.as_ref().map(|bias| bias.val());
        // Columns of the weight (a strided view) through the fused product where it applies.
        let project = |x: Tensor<3>, from: usize, width: usize| {
            let rows = x.dims()[1];
            let bias = bias.as_ref().map(|bias| bias.clone().narrow(0, from, width));
            let y = ops::linear::dense(x.reshape([b * rows, c]), weight.clone().narrow(1, from, width), bias);
            y.reshape([b, rows, width])
        };
        let last = x.clone().narrow(1, t - 1, 1);
        let q = project(last, 0, c).reshape([b, 1, h, hd]).swap_dims(1, 2); // [B, H, 1, hd]
        let kv = project(x, c, 2 * c);
        let split_heads = |z: Tensor<3>| z.reshape([b, t, h, hd]).swap_dims(1, 2); // [B, H, T, hd]
        let k = split_heads(kv.clone().narrow(2, 0, c));
        let v = split_heads(kv.narrow(2, c, c));
        // The last position may attend to every position: no mask.
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt()); // [B, H, 1, T]
        let weights = dropout::forward(&self.attn_dropout, softmax(scores, 3));
        let y = weights.matmul(v).swap_dims(1, 2).reshape([b, 1, c]);
        dropout::forward(&self.resid_dropout, ops::linear(&self.c_proj, y))
    }
}
