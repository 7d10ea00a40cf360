//! The key/value cache that makes generation cost one position per step instead of the whole window.
//!
//! Besides the keys and values of every layer it remembers, per row, which cached positions are
//! padding and how many real tokens came before: that is what lets a batch of prompts of different
//! lengths, padded on the left or on the right, generate exactly what each prompt would alone.

use burn::prelude::*;

use crate::error::{GptError, Result};

/// Keys and values of one layer, `[B, H, S, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerKvCache {
    k: Option<Tensor<4>>,
    v: Option<Tensor<4>>,
}

impl LayerKvCache {
    /// Nothing cached yet.
    pub fn is_empty(&self) -> bool {
        self.k.is_none()
    }

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

/// What a model needs for one cached forward pass: token ids and position ids `[B, T]`, and the
/// mask `[B, 1, T, S]` (true = may not attend) that keeps queries away from padding keys, `None`
/// when nothing is padding.
pub(crate) struct StepTensors {
    pub ids: Tensor<2, Int>,
    pub positions: Tensor<2, Int>,
    pub mask: Option<Tensor<4, Bool>>,
}

/// One cached forward pass, computed from the cache's bookkeeping.
struct StepInputs {
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

    /// Checks a cached forward pass's input (`tokens`, `is_pad`: `[B * T]`, row-major) against the
    /// cache and the model (`context` positions, `vocab` ids), records its positions, and returns
    /// what the model runs them with, on `device`.
    pub(crate) fn step(&mut self, tokens: &[u32], is_pad: &[bool], context: usize, vocab: usize, device: &Device) -> Result<StepTensors> {
        let (b, t) = (self.batch, self.check_step(tokens, is_pad, context, vocab)?);
        let step = self.advance(t, is_pad);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.iter().map(|&id| id as i64).collect(), [b, t]), device);
        let positions = Tensor::<2, Int>::from_data(TensorData::new(step.positions, [b, t]), device);
        let s = step.past + t;
        let mask = step.mask.map(|m| Tensor::<4, Bool>::from_data(TensorData::new(m, [b, 1, t, s]), device));
        Ok(StepTensors { ids, positions, mask })
    }

    /// The number of new positions per row of a valid step's input.
    fn check_step(&self, tokens: &[u32], is_pad: &[bool], context: usize, vocab: usize) -> Result<usize> {
        let b = self.batch;
        if b == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(b) || is_pad.len() != tokens.len() {
            return Err(GptError::Generation(format!(
                "forward_cached: {} tokens and {} padding flags do not make {b} equal rows",
                tokens.len(),
                is_pad.len()
            )));
        }
        let t = tokens.len() / b;
        if self.len() + t > context {
            return Err(GptError::Generation(format!(
                "{} cached + {t} new positions exceed the context window of {context}",
                self.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(GptError::Generation(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        Ok(t)
    }

    /// Records `t` new positions per row (`is_pad`: `[B * T]`) and returns their position ids and
    /// the attention mask that keeps every query away from padding keys.
    fn advance(&mut self, t: usize, is_pad: &[bool]) -> StepInputs {
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

/// Rows joining and leaving a running batch (continuous batching): the cached keys and values
/// are indexed by row along dimension 0, and a row's padding mask and position counter travel
/// with it, so a row decodes the same whichever rows it shares the batch with.
impl KvCache {
    /// Keeps only the rows `keep` (in that order), e.g. to drop finished ones.
    pub fn retain_rows(&mut self, keep: &[usize]) {
        if keep.is_empty() {
            *self = Self::new(self.layers.len(), 0);
            return;
        }
        for layer in &mut self.layers {
            let select = |t: Tensor<4>| {
                let index = Tensor::<1, Int>::from_data(TensorData::new(keep.iter().map(|&r| r as i64).collect(), [keep.len()]), &t.device());
                t.select(0, index)
            };
            layer.k = layer.k.take().map(select);
            layer.v = layer.v.take().map(select);
        }
        self.padding = keep.iter().map(|&r| self.padding[r].clone()).collect();
        self.next_position = keep.iter().map(|&r| self.next_position[r]).collect();
        self.batch = keep.len();
        self.trim_leading_padding();
    }

    /// Appends the rows of `other` after this cache's rows; the shorter side is padded on the
    /// left (padding is masked out and takes no position id, so no row's output changes).
    pub fn append_rows(&mut self, mut other: KvCache) {
        if self.batch == 0 {
            *self = other;
            return;
        }
        let len = self.len().max(other.len());
        self.pad_front(len - self.len());
        other.pad_front(len - other.len());
        for (layer, extra) in self.layers.iter_mut().zip(other.layers) {
            layer.k = cat_rows(layer.k.take(), extra.k);
            layer.v = cat_rows(layer.v.take(), extra.v);
        }
        self.padding.extend(other.padding);
        self.next_position.extend(other.next_position);
        self.batch += other.batch;
    }

    /// `n` padding positions in front of every row.
    fn pad_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        for layer in &mut self.layers {
            let pad = |t: Tensor<4>| {
                let [b, h, _, d] = t.dims();
                Tensor::cat(vec![Tensor::zeros([b, h, n, d], &t.device()), t], 2)
            };
            layer.k = layer.k.take().map(pad);
            layer.v = layer.v.take().map(pad);
        }
        for row in &mut self.padding {
            row.splice(0..0, std::iter::repeat_n(true, n));
        }
    }

    /// Drops leading positions that are padding in every row (left when rows leave), so the
    /// cache does not grow past what its rows need.
    fn trim_leading_padding(&mut self) {
        let len = self.len();
        let n = (0..len).take_while(|&j| self.padding.iter().all(|row| row[j])).count();
        if n == 0 || n == len {
            return;
        }
        for layer in &mut self.layers {
            let trim = |t: Tensor<4>| t.narrow(2, n, len - n);
            layer.k = layer.k.take().map(trim);
            layer.v = layer.v.take().map(trim);
        }
        for row in &mut self.padding {
            row.drain(..n);
        }
    }
}

fn cat_rows(a: Option<Tensor<4>>, b: Option<Tensor<4>>) -> Option<Tensor<4>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Tensor::cat(vec![a, b], 0)),
        (a, b) => a.or(b),
    }
}
