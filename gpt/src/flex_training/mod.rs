//! Training ops fused into single passes on the Flex (CPU) backend, each with its own backward.
//!
//! Burn's autodiff builds log-softmax, softmax and the tanh GELU out of several tensor ops, and
//! every one of them is a full pass over its input, an allocation and (for `exp`) a scalar libm
//! call per element, forward and again backward. On the 50,257-wide logits of a training step
//! that is a dozen passes over 200 MB. Here each op is one pass forward and one backward, with a
//! vectorised `exp`. The functions hand their input back (`Err`) when it is not an f32 Flex
//! tensor, and the caller falls back to Burn's ops: the GPU backends fuse those themselves.
//! Without the `flex` feature every function hands its input back.
//!
//! `linear` (the Linear layers' and tied head's products) and `causal_attention` (q/k/v to the
//! merged heads) call the GEMM directly for the same reason: see their files.

use burn::prelude::*;

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub use flex::*;
// The Linear layers' and the tied head's products (called from `flex_kernels`, which exists only
// with the `flex` feature, so there is no fallback).
#[cfg(feature = "flex")]
mod gemm;
#[cfg(feature = "flex")]
mod linear;
#[cfg(feature = "flex")]
pub use linear::{linear, times_transposed};
#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "flex")]
pub use attention::{causal_attention, causal_attention_by_burn_ops};

#[cfg(not(feature = "flex"))]
mod fallback;
#[cfg(not(feature = "flex"))]
pub use fallback::*;

/// The scalars of one AdamW step (`time` counts from 1).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub time: i32,
}

/// The moments of one parameter, or the inputs handed back when the update cannot be fused.
pub type Moments<const D: usize> = (Tensor<D>, Tensor<D>);
