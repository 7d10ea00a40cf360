//! The kernels' signatures for builds without the Flex backend: each hands its input back, and
//! the callers take Burn's ops.

use std::sync::Arc;

use burn::prelude::*;

use super::{AdamWStep, Moments};
use crate::quant::{Int8Matrix, Nf4Matrix};

/// Without the CPU kernels no product runs on the CPU's own path.
pub fn matmul_path() -> &'static str {
    "f32"
}

/// Without the CPU kernels no panels are packed, let alone kept.
pub struct KeepFrozenPanels;

pub fn keep_frozen_panels() -> KeepFrozenPanels {
    KeepFrozenPanels
}

pub fn streaming_linear(_x: &Tensor<2>, _weight: &Tensor<2>, _bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    None
}

pub fn streaming_times_transposed(_x: &Tensor<2>, _embedding: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

pub fn linear(_x: &Tensor<2>, _weight: &Tensor<2>, _bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    None
}

pub fn times_transposed(_x: &Tensor<2>, _embedding: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

pub fn lora_linear(_x: &Tensor<2>, _weight: &Tensor<2>, _bias: Option<&Tensor<1>>, _a: &Tensor<2>, _b: &Tensor<2>, _scale: f64) -> Option<Tensor<2>> {
    None
}

pub fn nf4_linear(_x: &Tensor<2>, _weight: &Arc<Nf4Matrix>, _bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    None
}

pub fn int8_linear(_x: &Tensor<2>, _weight: &Arc<Int8Matrix>, _bias: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    None
}

pub fn qlora_linear(_x: &Tensor<2>, _weight: &Arc<Nf4Matrix>, _bias: Option<&Tensor<1>>, _a: &Tensor<2>, _b: &Tensor<2>, _scale: f64) -> Option<Tensor<2>> {
    None
}

pub fn causal_attention(_qkv: &Tensor<3>, _n_head: usize, _keep_mask: Option<Vec<f32>>) -> Option<Tensor<3>> {
    None
}

pub fn cross_entropy_rows(logits: Tensor<2>, _targets: Tensor<1, Int>, _ignore: i64) -> Result<Tensor<1>, Tensor<2>> {
    Err(logits)
}

pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    Err(x)
}

pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
    Err((gate, up))
}

#[allow(clippy::type_complexity)]
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<Moments<D>>,
    _step: AdamWStep,
) -> Result<(Tensor<D>, Moments<D>), (Tensor<D>, Tensor<D>, Option<Moments<D>>)> {
    Err((param, grad, moments))
}
