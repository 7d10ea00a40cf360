//! One pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

use burn::module::Module;
use burn::nn::LayerNorm;
use burn::prelude::*;

use super::attention::CausalSelfAttention;
use super::mlp::Mlp;
use crate::models::kv_cache::LayerKvCache;

#[derive(Module, Debug)]
pub struct TransformerBlock {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl TransformerBlock {
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKvCache>, mask: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), cache, mask);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }

    /// The block's output at the last position only, `[B, 1, C]` (see
    /// [`CausalSelfAttention::forward_last`]): the MLP runs on one row instead of T.
    pub fn forward_last(&self, x: Tensor<3>) -> Tensor<3> {
        let t = x.dims()[1];
        let x_last = x.clone().narrow(1, t - 1, 1);
        let x = x_last + self.attn.forward_last(self.ln_1.forward(x));
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}
