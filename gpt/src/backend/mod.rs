//! Where tensors live and the CPU kernels behind the model's ops.
//!
//! - [`device`]: `--device auto|cpu|cuda[:N]|wgpu|vulkan|metal|tch-cpu|tch-cuda[:N]|tch-mps`, CPU threads.
//! - [`allocator`]: mimalloc for every llmfs binary, tuned for tensor work.
//! - [`kernels`]: fused CPU ops (Flex) with their own backward; [`crate::ops`] calls them and falls
//!   back to Burn's ops when they hand their input back. Without the `flex` feature the same
//!   functions come from `fallback.rs` and always hand their input back: the one place that
//!   knows whether the CPU kernels are compiled in.
//! - [`collective`]: gradients averaged between devices by the backend itself (NCCL on CUDA).
//! - [`keep_mask`]: dropout masks drawn on the host.
//! - [`precision`]: the products' precision (`--precision`), on every backend.

use burn::prelude::*;

pub mod allocator;
pub mod collective;
pub mod device;
#[cfg(not(feature = "flex"))]
pub mod fallback;
#[cfg(feature = "flex")]
pub mod flex;
pub mod keep_mask;
pub mod precision;

#[cfg(not(feature = "flex"))]
pub use fallback as kernels;
#[cfg(feature = "flex")]
pub use flex as kernels;

pub use device::{DeviceSpec, compiled_backends, is_flex, is_libtorch, on_cpu_workers, on_own_cpu_threads, set_cpu_threads};
pub use precision::{MatmulPrecision, matmul_precision, set_matmul_precision};

/// Up to this many rows a product by a weight matrix takes the streaming kernels (decoding):
/// they read the weight once, in order, where a GEMM's register blocking only pays on more rows.
pub const STREAMING_MAX_ROWS: usize = 16;

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
