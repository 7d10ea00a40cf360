//! The key/value cache that makes generation cost one position per step instead of the whole window.
//!
//! Besides the keys and values of every layer it remembers, per row, which cached positions are
//! padding and how many real tokens came before: that is what lets a batch of prompts of different
//! lengths, padded on the left or on the right, generate exactly what each prompt would alone.

use burn::prelude::*;

/// Keys and values of one layer, `[B, H, S, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerKvCache {
    k: Option<Tensor<4>>,
    v: Option<Tensor<4>>,
}

impl LayerKvCache {
    /// Appends the new positions and returns all keys and values so far.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let k = match self.k.take() {
            Some(old) => Tensor::cat(vec![old, k], 2),
            None => k,
        };
        let v = match self.v.take() {
            Some(old) => Tensor::cat(vec![old, v], 2),
            None => v,
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        (k, v)
    }
}

/// The cache of a whole model for a batch of `batch` rows.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKvCache>,
    batch: usize,
    /// `[B][S]`: whether each cached position is padding (never attended to).
    padding: Vec<Vec<bool>>,
    /// Per row, the position id the next real token gets (= real tokens seen so far).
    next_position: Vec<usize>,
}

/// What the model needs for one cached forward pass, computed from the cache's bookkeeping.
pub(crate) struct StepInputs {
    /// `[B * T]` position ids.
    pub positions: Vec<i64>,
    /// `[B, 1, T, S]` flattened, true = masked; `None` when nothing is padding.
    pub mask: Option<Vec<bool>>,
    pub past: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, batch: usize) -> Self {
        Self {
            layers: vec![LayerKvCache::default(); n_layer],
            batch,
            padding: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.padding.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `t` new positions per row (`is_pad`: `[B * T]`) and returns their position ids and
    /// the attention mask that keeps every query away from padding keys.
    pub(crate) fn advance(&mut self, t: usize, is_pad: &[bool]) -> StepInputs {
        assert_eq!(is_pad.len(), self.batch * t, "is_pad must have B * T entries");
        let past = self.len();
        let mut positions = Vec::with_capacity(self.batch * t);
        for (row, pads) in is_pad.chunks(t).enumerate() {
            for &pad in pads {
                // Padding gets position 0: its output is never used and never attended to.
                positions.push(if pad { 0 } else { self.next_position[row] as i64 });
                if !pad {
                    self.next_position[row] += 1;
                }
                self.padding[row].push(pad);
            }
        }
        let s = past + t;
        let any_padding = self.padding.iter().flatten().any(|&p| p);
        let mask = any_padding.then(|| {
            let mut mask = Vec::with_capacity(self.batch * t * s);
            for row in &self.padding {
                for i in 0..t {
                    // A query may always see itself, so that a padding query has one finite score
                    // (and no NaN to leak into later layers); real queries never sit on padding.
                    mask.extend(row.iter().enumerate().map(|(j, &pad)| pad && j != past + i));
                }
            }
            mask
        });
        StepInputs { positions, mask, past }
    }
}
