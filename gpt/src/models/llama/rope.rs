//! Rotary position embeddings (RoPE) as transformers computes them: each pair `(x[i], x[i + d/2])`
//! of a query or key head is rotated by `position · inv_freq[i]` ("rotate half", not interleaved).

use burn::prelude::*;

use super::config::{RopeConfig, RopeScaling};

/// The inverse frequencies of one head of `head_dim` values: `1 / θ^(2i/d)`, then scaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &RopeConfig, head_dim: usize) -> Self {
        let base: Vec<f64> = (0..head_dim / 2).map(|i| 1.0 / config.theta.powf((2 * i) as f64 / head_dim as f64)).collect();
        let inv_freq = match config.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                // transformers' `_compute_llama3_parameters`: wavelengths longer than the original
                // context / low_freq_factor are stretched by `factor`, shorter than
                // context / high_freq_factor kept, and those between blended smoothly.
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Self { inv_freq: inv_freq.into_iter().map(|f| f as f32).collect() }
    }

    /// `(cos, sin)`, each `[B, 1, T, head_dim]`, for position ids `[B, T]` (one row may stand for
    /// every row: `[1, T]`). Angles are computed in f32 as transformers does.
    pub fn cos_sin(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [b, t] = positions.dims();
        let half = self.inv_freq.len();
        let device = positions.device();
        let inv_freq = Tensor::<1>::from_data(TensorData::new(self.inv_freq.clone(), [half]), &device);
        let angles = positions.float().reshape([b, t, 1]) * inv_freq.reshape([1, 1, half]); // [B, T, d/2]
        let angles = Tensor::cat(vec![angles.clone(), angles], 2).unsqueeze_dim::<4>(1); // [B, 1, T, d]
        (angles.clone().cos(), angles.sin())
    }
}

/// Rotates heads `x` `[B, H, T, d]` by the angles of `cos`/`sin` `[B, 1, T, d]`:
/// `x·cos + rotate_half(x)·sin`, `rotate_half([a, b]) = [-b, a]`.
pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let first = x.clone().narrow(3, 0, d / 2);
    let second = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
}
