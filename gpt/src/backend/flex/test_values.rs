//! The kernels' tests' and benchmarks' inputs: reproducible values, uniform in [-0.5, 0.5) times a
//! scale, from a seed (xorshift64), one sequence for all of them.

use burn::prelude::*;

/// `n` values from `seed`, times `scale`.
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// A tensor of [`values`] in `shape` on `device`.
pub fn tensor<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values(shape.iter().product(), seed, scale), shape), device)
}
