//! Quantized frozen weights: QLoRA's and `--quantize` for inference.
//!
//! - [`nf4`]: 4-bit NormalFloat in blocks of 64 values with one absmax each, optionally with the
//!   absmax themselves quantized to 8 bits (double quantization), byte for byte as bitsandbytes
//!   stores them.
//! - [`int8`]: 8-bit values with one absmax per output row (LLM.int8's weight format without
//!   outlier columns), as bitsandbytes' `int8_vectorwise_quant`.
//! - [`reparam`]: such weights inside Burn's modules (`--quantize nf4|int8`, QLoRA's frozen base).
//! - [`at_load`]: every quantization's first step, a model with placeholders and the matrices
//!   beside it ([`Quantized`]), quantized while loading or after; then attached for inference or QLoRA.
//! - [`bnb_checkpoint`]: checkpoints `transformers` saved with bitsandbytes 4-bit weights.
//!
//! The products by such a weight are CPU kernels: `crate::backend::kernels::{nf4,int8}_*`.

pub mod at_load;
pub mod bnb_checkpoint;
pub mod int8;
pub mod nf4;
pub mod reparam;
#[cfg(test)]
mod test_support;

pub use at_load::{FrozenMatrix, QuantizeAtLoad, QuantizeOnRead, Quantized, fill_quantized};
pub use int8::Int8Matrix;
pub use nf4::{Absmax, BLOCK, DOUBLE_BLOCK, DoubleAbsmax, NF4_CODE, Nf4Matrix};
pub use reparam::{
    FrozenBase, FrozenFormat, Int8Base, Int8Weight, Nf4Base, Nf4Options, Nf4Weight, QloraAdapter, Quantization, ensure_not_quantized, is_quantized, nf4_matrix, quantize_as, quantize_with,
    quantize_with_adapters,
};
