//! The CPU kernels: ops on Burn's Flex backend that replace compositions of Burn ops.
//!
//! Burn's autodiff builds log-softmax, softmax and the tanh GELU out of several tensor ops, each
//! a full pass over its input and an allocation, forward and again backward; its matmul outputs
//! are zero-filled and copied before the GEMM writes them. Here each op is one pass forward and
//! one backward, and the products call the GEMM directly. Every function hands its input back
//! (`None` / `Err`) when it does not apply (not an f32 Flex tensor, a shape it does not take), and
//! the caller in [`crate::ops`] takes Burn's ops: the GPU backends fuse those themselves.
//! [`super::fallback`] has the same functions for builds without Flex. Every product goes through
//! one GEMM call, f32 or, after [`crate::backend::set_matmul_precision`]`(Bf16)`, bf16 with f32 accumulation
//! (`F16`: inputs rounded to f16, f32 accumulation).

mod attention;
mod bf16;
mod bf16_weights;
mod decode;
mod f16;
mod gemm;
mod int8;
mod linear;
mod nf4;
mod parallel;
mod precision;
mod qlora;
mod tensor;
pub mod test_values;
mod training;

pub use attention::{causal_attention, causal_attention_by_burn_ops};
pub use bf16::{KeepFrozenPanels, from_bf16, keep_frozen_panels, to_bf16};
pub use decode::{streaming_linear, streaming_times_transposed};
pub use gemm::matmul;
pub use int8::{int8_linear, int8_times_transposed};
pub use linear::{linear, lora_linear, times_transposed};
pub use nf4::{nf4_times, nf4_times_transposed};
pub use precision::matmul_path;
pub use qlora::{nf4_linear, qlora_linear};
pub use training::{adamw_update, cross_entropy_rows, gelu_tanh, swiglu};
