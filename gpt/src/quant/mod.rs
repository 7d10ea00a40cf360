//! Quantized frozen weights for QLoRA (Dettmers et al. 2023).
//!
//! - [`nf4`]: 4-bit NormalFloat in blocks of 64 values with one absmax each, optionally with the
//!   absmax themselves quantized to 8 bits (double quantization), byte for byte as bitsandbytes
//!   stores them.
//!
//! The products by such a weight are CPU kernels: `crate::backend::kernels::nf4_*`.

pub mod nf4;

pub use nf4::{Absmax, BLOCK, DOUBLE_BLOCK, DoubleAbsmax, NF4_CODE, Nf4Matrix};
