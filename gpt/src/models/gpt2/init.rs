//! GPT-2's initialisation as a [`TensorSource`]: weights N(0, initializer_range), residual
//! projections scaled down, biases 0, LayerNorm 1/0.

use burn::prelude::*;

use crate::error::Result;
use crate::io::{TensorSource, seeded_normal};
use super::config::GptConfig;

/// GPT-2's initialisation, drawn on the host with one generator per tensor (seeded from the
/// run seed and the tensor's name), so the weights do not depend on the backend or on the order
/// in which parameters are visited.
pub struct RandomInit {
    seed: u64,
    std: f64,
    residual_std: f64,
}

impl RandomInit {
    pub fn new(config: &GptConfig, seed: u64) -> Self {
        let std = config.initializer_range;
        Self { seed, std, residual_std: std / (2.0 * config.n_layer as f64).sqrt() }
    }
}

impl TensorSource for RandomInit {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let is_layer_norm = name.starts_with("ln_f.") || name.contains(".ln_1.") || name.contains(".ln_2.");
        let values = if is_layer_norm {
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            // Projections into the residual stream are scaled so the stream's variance does not
            // grow with depth (GPT-2 paper, section 2.3).
            let std = if name.ends_with("c_proj.weight") { self.residual_std } else { self.std };
            seeded_normal(self.seed, name, std, n)?
        };
        Ok(TensorData::new(values, shape.to_vec()))
    }
}
