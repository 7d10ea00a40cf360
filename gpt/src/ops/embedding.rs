//! Embedding lookups whose table may be kept in bf16 (`--dtype bf16`): the rows come out as f32
//! activations either way, so everything after them runs as it does with f32 weights.

use burn::nn::Embedding;
use burn::prelude::*;
use burn::tensor::FloatDType;

/// The rows of `table` for `ids` `[B, T]`, as f32 `[B, T, C]`.
pub fn embedding(table: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    // A no-op for an f32 table; for a bf16 one only the B·T rows looked up are widened.
    table.forward(ids).cast(FloatDType::F32)
}
