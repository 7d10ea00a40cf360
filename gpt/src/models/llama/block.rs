//! One pre-RMSNorm decoder layer: x + attn(norm(x)), then x + mlp(norm(x)).

use burn::module::Module;
use burn::nn::RmsNorm;
use burn::prelude::*;

use super::attention::Attention;
use super::mlp::Mlp;
use crate::models::kv_cache::LayerKvCache;

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        cache: Option<&mut LayerKvCache>,
        mask: Option<Tensor<4, Bool>>,
    ) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, cache, mask);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}
