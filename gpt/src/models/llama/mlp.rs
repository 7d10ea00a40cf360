//! The SwiGLU feed-forward network: `down(silu(gate(x)) · up(x))`.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use crate::ops;

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gated = ops::swiglu(ops::linear(&self.gate_proj, x.clone()), ops::linear(&self.up_proj, x));
        ops::linear(&self.down_proj, gated)
    }
}
