//! Grouped-query self-attention with rotary positions: separate q/k/v projections (biases when
//! the config says so), Qwen3's per-head RMSNorm of queries and keys, and a KV cache that holds
//! only the key/value heads.

use burn::module::Module;
use burn::nn::{Dropout, Linear, RmsNorm};
use burn::prelude::*;

use super::rope;
use crate::backend::kernels;
use crate::models::kv_cache::LayerKvCache;
use crate::ops;
use crate::ops::dropout;

#[derive(Module, Debug)]
pub struct Attention {
    /// `[hidden, heads · head_dim]`.
    pub q_proj: Linear,
    /// `[hidden, kv_heads · head_dim]`.
    pub k_proj: Linear,
    pub v_proj: Linear,
    /// `[heads · head_dim, hidden]`.
    pub o_proj: Linear,
    /// Qwen3: RMSNorm over each head's `head_dim` values of q and k, before the rotation.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub attn_dropout: Dropout,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// `x`: `[B, T, hidden]`; `cos`/`sin`: the rotation of each position, `[B or 1, 1, T, head_dim]`.
    /// With a cache the T new positions attend to everything cached before them (the cache grows
    /// by T); `mask` (`[B, 1, T, S]`, true = may not attend) excludes padding keys.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        cache: Option<&mut LayerKvCache>,
        mask: Option<Tensor<4, Bool>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let hd = self.head_dim;
        let heads = |z: Tensor<3>, n: usize, norm: &Option<RmsNorm>| {
            let z = z.reshape([b, t, n, hd]);
            let z = match norm {
                Some(norm) => norm.forward(z),
                None => z,
            };
            z.swap_dims(1, 2) // [B, n, T, hd]
        };
        let q = heads(ops::linear(&self.q_proj, x.clone()), self.heads, &self.q_norm);
        let k = heads(ops::linear(&self.k_proj, x.clone()), self.kv_heads, &self.k_norm);
        let v = heads(ops::linear(&self.v_proj, x), self.kv_heads, &None);
        let q = rope::apply(q, cos, sin);
        let mut k = rope::apply(k, cos, sin);
        let mut v = v;
        // Nothing before these positions and no padding (a prompt's prefill, a forward pass):
        // plain causal attention over the T positions.
        let whole = mask.is_none() && cache.as_ref().is_none_or(|c| c.is_empty());
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v);
        }
        let k = ops::attention::repeat_kv(k, self.heads);
        let v = ops::attention::repeat_kv(v, self.heads);
        let merge = |z: Tensor<4>| z.swap_dims(1, 2).reshape([b, t, self.heads * hd]);
        if whole {
            // On the CPU (a prefill, or training): the blocked causal kernel with its own
            // backward, q | k | v side by side; the weights' dropout mask drawn as
            // `dropout::forward` would draw it for [B, H, T, T].
            let keep_mask = dropout::flex_mask(&self.attn_dropout, b * self.heads * t * t, &q.device());
            let qkv = Tensor::cat(vec![merge(q.clone()), merge(k.clone()), merge(v.clone())], 2);
            if let Some(y) = kernels::causal_attention(&qkv, self.heads, keep_mask) {
                return ops::linear(&self.o_proj, y);
            }
        }
        let y = ops::attention::causal(q, k, v, mask, &self.attn_dropout);
        ops::linear(&self.o_proj, merge(y))
    }
}
