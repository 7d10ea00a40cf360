//! The Llama family's initialisation as a [`TensorSource`] (transformers' `_init_weights`):
//! projections and embeddings N(0, initializer_range), biases 0, RMSNorm weights 1.

use burn::prelude::*;

use super::config::LlamaConfig;
use crate::error::Result;
use crate::io::{TensorSource, seeded_normal};

/// Drawn on the host with one generator per tensor (seeded from the seed and the tensor's name),
/// so the weights do not depend on the backend or the order parameters are visited in.
pub struct LlamaInit {
    seed: u64,
    std: f64,
}

impl LlamaInit {
    pub fn new(config: &LlamaConfig, seed: u64) -> Self {
        Self { seed, std: config.initializer_range }
    }
}

impl TensorSource for LlamaInit {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let values = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            seeded_normal(self.seed, name, self.std, n)?
        };
        Ok(TensorData::new(values, shape.to_vec()))
    }
}
