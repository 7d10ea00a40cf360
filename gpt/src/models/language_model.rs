//! What generation, logits and evaluation need of a causal language model, whatever its family:
//! the [`CausalLm`] trait, and [`LanguageModel`], a loaded model of any family.

use burn::module::Module;
use burn::prelude::*;

use super::gpt2::Gpt;
use super::kv_cache::KvCache;
use super::llama::Llama;
use crate::error::Result;

/// A decoder-only language model: embed → blocks with a KV cache → final norm → head. `Sync`, so
/// that generation can run its forward passes on the CPU kernels' worker threads.
pub trait CausalLm: Sync {
    fn vocab_size(&self) -> usize;
    /// The most positions one sequence may have.
    fn context_length(&self) -> usize;
    fn device(&self) -> Device;
    /// An empty KV cache for `batch` rows.
    fn new_cache(&self, batch: usize) -> KvCache;
    /// Runs `t` new positions per row (`tokens`, `is_pad`: `[B * T]`, row-major) through the
    /// model, attending to and extending `cache`; padding is never attended to and takes no
    /// position. Returns the final hidden states `[B, T, C]`.
    fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>>;
    /// Final hidden states `[B, T, C]` of token ids `[B, T]` (causal, no padding, no cache).
    fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3>;
    /// The output head: `[B, T, C] → [B, T, vocab]`.
    fn head(&self, hidden: Tensor<3>) -> Tensor<3>;
    /// Logits `[B, T, vocab]` of token ids `[B, T]`.
    fn logits(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids))
    }
}

impl CausalLm for Gpt {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn context_length(&self) -> usize {
        self.config().n_positions
    }
    fn device(&self) -> Device {
        Gpt::device(self)
    }
    fn new_cache(&self, batch: usize) -> KvCache {
        Gpt::new_cache(self, batch)
    }
    fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>> {
        Gpt::forward_cached(self, tokens, is_pad, cache)
    }
    fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        Gpt::hidden(self, ids)
    }
    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        Gpt::head(self, hidden)
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }
    fn context_length(&self) -> usize {
        self.config().max_position_embeddings
    }
    fn device(&self) -> Device {
        Llama::device(self)
    }
    fn new_cache(&self, batch: usize) -> KvCache {
        Llama::new_cache(self, batch)
    }
    fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>> {
        Llama::forward_cached(self, tokens, is_pad, cache)
    }
    fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        Llama::hidden(self, ids)
    }
    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        Llama::head(self, hidden)
    }
}

/// A language model of any family, as loaded from a directory, the hub or a preset.
#[derive(Module, Debug)]
pub enum LanguageModel {
    Gpt2(Gpt),
    Llama(Llama),
}

impl LanguageModel {
    /// The family's name as `config.json` spells its class (`GPT2LMHeadModel`, `LlamaForCausalLM` ...).
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Gpt2(_) => "GPT2LMHeadModel",
            Self::Llama(model) => model.config().architecture().map_or("LlamaForCausalLM", |a| a.class_name()),
        }
    }

    /// Sets the model's dropout probabilities to `p` (GPT-2: all of them; Llama: attention's).
    pub fn with_dropout(self, p: f64) -> Self {
        match self {
            Self::Gpt2(model) => Self::Gpt2(model.with_dropout(p)),
            Self::Llama(model) => Self::Llama(model.with_dropout(p)),
        }
    }

    /// The architecture's settings as `config.json` holds them (for a run's `run.json`).
    pub fn config_json(&self) -> serde_json::Value {
        match self {
            Self::Gpt2(model) => serde_json::to_value(model.config()).unwrap_or_default(),
            Self::Llama(model) => model.config().to_hf_json(),
        }
    }

    /// Token (and, for GPT-2, position) embeddings of ids `[B, T]`: the input of block 0.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::Gpt2(model) => model.embed_tokens(ids),
            Self::Llama(model) => model.embed_tokens(ids),
        }
    }

    /// The residual stream `x` `[B, T, C]` through blocks `range` (causal, no padding).
    pub fn run_blocks(&self, x: Tensor<3>, range: std::ops::Range<usize>) -> Tensor<3> {
        match self {
            Self::Gpt2(model) => model.run_blocks(x, range),
            Self::Llama(model) => model.run_blocks(x, range),
        }
    }

    /// The final norm (GPT-2's LayerNorm `ln_f`, the Llama family's RMSNorm `norm`).
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Gpt2(model) => model.final_norm(x),
            Self::Llama(model) => model.final_norm(x),
        }
    }

    /// Number of transformer blocks.
    pub fn num_blocks(&self) -> usize {
        match self {
            Self::Gpt2(model) => model.h.len(),
            Self::Llama(model) => model.model.layers.len(),
        }
    }

    /// Width of the residual stream.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Gpt2(model) => model.config().n_embd,
            Self::Llama(model) => model.config().hidden_size,
        }
    }

    /// The standard deviation new weights are drawn with (the config's `initializer_range`).
    pub fn initializer_range(&self) -> f64 {
        match self {
            Self::Gpt2(model) => model.config().initializer_range,
            Self::Llama(model) => model.config().initializer_range,
        }
    }

    /// Freezes the model except blocks `first_trainable..`, the embeddings when `embeddings`,
    /// and the final norm when `final_norm`. The output head (a tied embedding, or Llama's
    /// `lm_head`) follows the embeddings.
    pub fn set_trainable(self, first_trainable: usize, embeddings: bool, final_norm: bool) -> Self {
        match self {
            Self::Gpt2(mut gpt) => {
                gpt.wte = gpt.wte.clone().set_require_grad(embeddings);
                gpt.wpe = gpt.wpe.clone().set_require_grad(embeddings);
                for (i, block) in gpt.h.iter_mut().enumerate() {
                    *block = block.clone().set_require_grad(i >= first_trainable);
                }
                gpt.ln_f = gpt.ln_f.clone().set_require_grad(final_norm);
                Self::Gpt2(gpt)
            }
            Self::Llama(mut llama) => {
                let trunk = &mut llama.model;
                trunk.embed_tokens = trunk.embed_tokens.clone().set_require_grad(embeddings);
                for (i, layer) in trunk.layers.iter_mut().enumerate() {
                    *layer = layer.clone().set_require_grad(i >= first_trainable);
                }
                trunk.norm = trunk.norm.clone().set_require_grad(final_norm);
                llama.lm_head = llama.lm_head.clone().map(|head| head.set_require_grad(embeddings));
                Self::Llama(llama)
            }
        }
    }

    /// The GPT-2 model inside, if that is the family.
    pub fn as_gpt2(&self) -> Option<&Gpt> {
        match self {
            Self::Gpt2(model) => Some(model),
            Self::Llama(_) => None,
        }
    }

    fn inner(&self) -> &dyn CausalLm {
        match self {
            Self::Gpt2(model) => model,
            Self::Llama(model) => model,
        }
    }
}

impl From<Gpt> for LanguageModel {
    fn from(model: Gpt) -> Self {
        Self::Gpt2(model)
    }
}

impl From<Llama> for LanguageModel {
    fn from(model: Llama) -> Self {
        Self::Llama(model)
    }
}

impl CausalLm for LanguageModel {
    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }
    fn context_length(&self) -> usize {
        self.inner().context_length()
    }
    fn device(&self) -> Device {
        self.inner().device()
    }
    fn new_cache(&self, batch: usize) -> KvCache {
        self.inner().new_cache(batch)
    }
    fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>> {
        self.inner().forward_cached(tokens, is_pad, cache)
    }
    fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.inner().hidden(ids)
    }
    fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.inner().head(hidden)
    }
}
