//! Quantized frozen weights for QLoRA (Dettmers et al. 2023).
//!
//! - [`nf4`]: 4-bit NormalFloat in blocks of 64 values with one absmax each, optionally with the
//!   absmax themselves quantized to 8 bits (double quantization), byte for byte as bitsandbytes
//!   stores them.
//! - [`reparam`]: such weights inside Burn's modules (`--quantize nf4`, QLoRA's frozen base).
//! - [`bnb_checkpoint`]: checkpoints `transformers` saved with bitsandbytes 4-bit weights.
//!
//! The products by such a weight are CPU kernels: `crate::backend::kernels::nf4_*`.

pub mod bnb_checkpoint;
pub mod nf4;
pub mod reparam;

pub use nf4::{Absmax, BLOCK, DOUBLE_BLOCK, DoubleAbsmax, NF4_CODE, Nf4Matrix};
pub use reparam::{Nf4Base, Nf4Options, Nf4Weight, QloraAdapter, ensure_not_quantized, is_quantized, nf4_matrix, quantize_with, quantize_with_adapters};
