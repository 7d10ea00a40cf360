//! The position-wise feed-forward network: Linear(C, 4C) → tanh-GELU → Linear(4C, C) → dropout.

use burn::module::Module;
use burn::nn::{Dropout, Gelu, Linear};
use burn::prelude::*;

use crate::ops::{self, dropout};

#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    /// A residual projection: its init is scaled down by 1/sqrt(2·n_layer).
    pub c_proj: Linear,
    /// `gelu_new`: the tanh approximation GPT-2 was trained with.
    pub act: Gelu,
    pub dropout: Dropout,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = ops::gelu(&self.act, ops::linear(&self.c_fc, x));
        dropout::forward(&self.dropout, ops::linear(&self.c_proj, h))
    }
}
