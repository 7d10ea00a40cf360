//! GPT-2: token + position embeddings → dropout → blocks → final LayerNorm → output head tied to
//! the token embedding (`logits = ln_f(h) @ wte^T`).
//!
//! Field names follow Hugging Face's (`wte`, `h.0.attn.c_attn`, `ln_f`, ...), so a parameter's
//! Burn path is its HF tensor name, up to LayerNorm's `gamma`/`beta` = HF `weight`/`bias`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, LinearConfig};
use burn::prelude::*;

use super::attention::CausalSelfAttention;
use super::block::TransformerBlock;
use super::config::GptConfig;
use super::init::RandomInit;
use super::mlp::Mlp;
use crate::error::Result;
use crate::io::{MatricesAs, WeightDtype, fill_params};
use crate::models::kv_cache::KvCache;
use crate::ops::{self, dropout};

#[derive(Module, Debug)]
pub struct Gpt {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub drop: Dropout,
    pub h: Vec<TransformerBlock>,
    pub ln_f: LayerNorm,
    #[module(skip)]
    config: GptConfig,
}

impl Gpt {
    /// The module tree with lazily initialised parameters: nothing is allocated until each
    /// parameter is replaced (by loaded weights or by [`Gpt::init`]).
    pub(crate) fn skeleton(config: &GptConfig, device: &Device) -> Self {
        let c = config.n_embd;
        let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).init(device);
        let layer_norm = || LayerNormConfig::new(c).with_epsilon(config.layer_norm_epsilon).init(device);
        let dropout = |p| DropoutConfig::new(p).init();
        let h = (0..config.n_layer)
            .map(|_| TransformerBlock {
                ln_1: layer_norm(),
                attn: CausalSelfAttention {
                    c_attn: linear(c, 3 * c),
                    c_proj: linear(c, c),
                    attn_dropout: dropout(config.attn_pdrop),
                    resid_dropout: dropout(config.resid_pdrop),
                    n_head: config.n_head,
                },
                ln_2: layer_norm(),
                mlp: Mlp {
                    c_fc: linear(c, config.mlp_width()),
                    c_proj: linear(config.mlp_width(), c),
                    act: Gelu::new_approximate(),
                    dropout: dropout(config.resid_pdrop),
                },
            })
            .collect();
        Self {
            wte: EmbeddingConfig::new(config.vocab_size, c).init(device),
            wpe: EmbeddingConfig::new(config.n_positions, c).init(device),
            drop: dropout(config.embd_pdrop),
            h,
            ln_f: layer_norm(),
            config: config.clone(),
        }
    }

    /// A freshly initialised model, GPT-2 style: weights N(0, initializer_range), the residual
    /// projections (`attn.c_proj`, `mlp.c_proj`) scaled by 1/sqrt(2·n_layer), biases 0, LayerNorm
    /// 1/0. The same seed gives the same weights on every backend.
    pub fn init(config: &GptConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::init_as(config, seed, device, WeightDtype::F32)
    }

    /// [`Gpt::init`] with the weight matrices kept as `dtype` (the same values, rounded).
    pub fn init_as(config: &GptConfig, seed: u64, device: &Device, dtype: WeightDtype) -> Result<Self> {
        config.validate()?;
        fill_params(Self::skeleton(config, device), &mut MatricesAs { source: &mut RandomInit::new(config, seed), dtype })
    }

    /// Sets every dropout probability (embeddings, attention, residual) to `p`, e.g. 0 for
    /// fine-tuning as in *Build a LLM From Scratch*.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.config = self.config.with_dropout(p);
        self.drop.prob = p;
        for block in &mut self.h {
            block.attn.attn_dropout.prob = p;
            block.attn.resid_dropout.prob = p;
            block.mlp.dropout.prob = p;
        }
        self
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.wte.weight.lazy_device()
    }

    /// Token + position embeddings (with embedding dropout). `positions`: `[B, T]` or `[1, T]`.
    fn embed(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        dropout::forward(&self.drop, ops::embedding(&self.wte, ids) + ops::embedding(&self.wpe, positions))
    }

    fn check_length(&self, t: usize) {
        assert!(
            t <= self.config.n_positions,
            "sequence of {t} tokens is longer than the context window ({} positions)",
            self.config.n_positions
        );
    }

    /// Token + position embeddings of ids `[B, T]` at positions 0..T: the input of block 0.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = ids.dims();
        self.check_length(t);
        let positions = Tensor::<1, Int>::arange(0..t as i64, &ids.device()).unsqueeze::<2>();
        self.embed(ids, positions)
    }

    /// Runs the residual stream `x` `[B, T, C]` through blocks `range` (causal, no padding).
    /// Splitting the trunk lets a fine-tuning run compute a frozen prefix once.
    pub fn run_blocks(&self, mut x: Tensor<3>, range: std::ops::Range<usize>) -> Tensor<3> {
        for block in &self.h[range] {
            x = block.forward(x, None, None);
        }
        x
    }

    /// Like [`Gpt::run_blocks`] over `first..n_layer` followed by taking the last position, but
    /// the last block computes that position only: `[B, 1, C]`, for readers of the last token.
    pub fn run_blocks_to_last(&self, x: Tensor<3>, first: usize) -> Tensor<3> {
        let n = self.h.len();
        if first >= n {
            let t = x.dims()[1];
            return x.narrow(1, t - 1, 1);
        }
        self.h[n - 1].forward_last(self.run_blocks(x, first..n - 1))
    }

    /// The final LayerNorm.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.ln_f.forward(x)
    }

    /// Final hidden states `[B, T, C]` (after `ln_f`) for token ids `[B, T]`, causal, no padding.
    pub fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.final_norm(self.run_blocks(self.embed_tokens(ids), 0..self.h.len()))
    }

    /// The output head, tied to the token embedding: `[B, T, C] → [B, T, vocab]`.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        // As a 2-D product against the embedding: Burn's 3-D `linear` would broadcast the weight
        // over the batch and copy all of it (150 MB for GPT-2) on every call.
        let [b, t, c] = hidden.dims();
        let logits = ops::tied_head(hidden.reshape([b * t, c]), self.wte.weight.val());
        logits.reshape([b, t, self.config.vocab_size])
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids))
    }

    /// HF's `output_hidden_states` plus the raw output of the last block: `[embeddings, output of
    /// block 0, ..., output of block n-1, ln_f(output of block n-1)]` (n + 2 tensors, `[B, T, C]`).
    pub fn hidden_states(&self, ids: Tensor<2, Int>) -> Vec<Tensor<3>> {
        let mut states = vec![self.embed_tokens(ids)];
        for i in 0..self.h.len() {
            let x = self.run_blocks(states[i].clone(), i..i + 1);
            states.push(x);
        }
        let last = states[states.len() - 1].clone();
        states.push(self.ln_f.forward(last));
        states
    }

    /// An empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.n_layer, batch)
    }

    /// Runs `t` new positions per row through the model, attending to (and extending) the cache.
    /// `tokens` and `is_pad` are `[B * T]`, row-major; padding is never attended to and does not
    /// advance its row's position ids. Returns the final hidden states `[B, T, C]`.
    pub fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>> {
        let step = cache.step(tokens, is_pad, self.config.n_positions, self.config.vocab_size, &self.device())?;
        let mut x = self.embed(step.ids, step.positions);
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, Some(layer_cache), step.mask.clone());
        }
        Ok(self.ln_f.forward(x))
    }
}

