//! The Llama family: token embedding → decoder layers (RMSNorm → grouped-query attention with
//! rotary positions → residual, RMSNorm → SwiGLU → residual) → final RMSNorm → output head
//! (`lm_head`, or the token embedding when tied).
//!
//! Field names follow Hugging Face's (`model.embed_tokens`, `model.layers.0.self_attn.q_proj`,
//! `model.norm`, `lm_head`), so a parameter's Burn path is its HF tensor name, up to RMSNorm's
//! `gamma` = HF `weight`. HF stores `Linear` weights `[out, in]`, Burn `[in, out]`: see
//! [`Llama::is_out_in_linear`].

use burn::module::{Module, Param};
use burn::nn::{DropoutConfig, Embedding, EmbeddingConfig, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;

use super::attention::Attention;
use super::block::DecoderLayer;
use super::config::LlamaConfig;
use super::init::LlamaInit;
use super::mlp::Mlp;
use super::rope::Rope;
use crate::error::Result;
use crate::io::{MatricesAs, WeightDtype, fill_params};
use crate::models::kv_cache::KvCache;
use crate::ops;

/// Everything below the output head (HF's `LlamaModel`, saved under `model.`).
#[derive(Module, Debug)]
pub struct LlamaTrunk {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

/// An untied output head, `[vocab, hidden]` as HF stores it (`logits = h · Wᵀ`).
#[derive(Module, Debug)]
pub struct LmHead {
    pub weight: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
pub struct Llama {
    pub model: LlamaTrunk,
    /// `None` when tied to `model.embed_tokens` (`tie_word_embeddings`).
    pub lm_head: Option<LmHead>,
    #[module(skip)]
    config: LlamaConfig,
    #[module(skip)]
    rope: Rope,
}

impl Llama {
    /// The module tree with lazily initialised parameters: nothing is allocated until each
    /// parameter is replaced (by loaded weights or by [`Llama::init`]).
    pub(crate) fn skeleton(config: &LlamaConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let (c, hd) = (config.hidden_size, config.head_dim());
        let (q, kv) = (config.num_attention_heads * hd, config.kv_heads() * hd);
        let linear = |d_in, d_out, bias| LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        let norm = |d| RmsNormConfig::new(d).with_epsilon(config.rms_norm_eps).init(device);
        let qk_norm = || config.qk_norm().then(|| norm(hd));
        let layers = (0..config.num_hidden_layers)
            .map(|_| DecoderLayer {
                input_layernorm: norm(c),
                self_attn: Attention {
                    q_proj: linear(c, q, config.qkv_bias()),
                    k_proj: linear(c, kv, config.qkv_bias()),
                    v_proj: linear(c, kv, config.qkv_bias()),
                    o_proj: linear(q, c, config.o_bias()),
                    q_norm: qk_norm(),
                    k_norm: qk_norm(),
                    attn_dropout: DropoutConfig::new(config.attention_dropout).init(),
                    heads: config.num_attention_heads,
                    kv_heads: config.kv_heads(),
                    head_dim: hd,
                },
                post_attention_layernorm: norm(c),
                mlp: Mlp {
                    gate_proj: linear(c, config.intermediate_size, false),
                    up_proj: linear(c, config.intermediate_size, false),
                    down_proj: linear(config.intermediate_size, c, false),
                },
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings)
            .then(|| LmHead { weight: EmbeddingConfig::new(config.vocab_size, c).init(device).weight });
        Ok(Self {
            model: LlamaTrunk { embed_tokens: EmbeddingConfig::new(config.vocab_size, c).init(device), layers, norm: norm(c) },
            lm_head,
            rope: Rope::new(&config.rope()?, hd),
            config: config.clone(),
        })
    }

    /// A freshly initialised model (transformers' init); the same seed gives the same weights on
    /// every backend.
    pub fn init(config: &LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::init_as(config, seed, device, WeightDtype::F32)
    }

    /// [`Llama::init`] with the weight matrices kept as `dtype` (the same values, rounded).
    pub fn init_as(config: &LlamaConfig, seed: u64, device: &Device, dtype: WeightDtype) -> Result<Self> {
        fill_params(Self::skeleton(config, device)?, &mut MatricesAs { source: &mut LlamaInit::new(config, seed), dtype })
    }

    /// Whether HF tensor `name` is a `Linear` weight, stored `[out, in]` by HF (Burn's are `[in, out]`).
    pub fn is_out_in_linear(name: &str) -> bool {
        name.ends_with("_proj.weight")
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The model without its untied output head, for a sequence classifier, whose own head
    /// replaces it (transformers' `*ForSequenceClassification` has none either).
    pub fn without_lm_head(mut self) -> Self {
        self.lm_head = None;
        self
    }

    /// Sets the attention dropout (the family's only dropout, HF's `attention_dropout`) to `p`.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.config.attention_dropout = p;
        for layer in &mut self.model.layers {
            layer.self_attn.attn_dropout.prob = p;
        }
        self
    }

    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.lazy_device()
    }

    fn check_length(&self, t: usize) {
        assert!(
            t <= self.config.max_position_embeddings,
            "sequence of {t} tokens is longer than the context window ({} positions)",
            self.config.max_position_embeddings
        );
    }

    /// Token embeddings of ids `[B, T]`: the input of layer 0.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.check_length(ids.dims()[1]);
        ops::embedding(&self.model.embed_tokens, ids)
    }

    /// Runs the residual stream `x` `[B, T, C]` (positions 0..T, causal, no padding) through
    /// layers `range`. Splitting the trunk lets a fine-tuning run compute a frozen prefix once.
    pub fn run_blocks(&self, mut x: Tensor<3>, range: std::ops::Range<usize>) -> Tensor<3> {
        let t = x.dims()[1];
        let positions = Tensor::<1, Int>::arange(0..t as i64, &x.device()).unsqueeze::<2>();
        let (cos, sin) = self.rope.cos_sin(positions);
        for layer in &self.model.layers[range] {
            x = layer.forward(x, &cos, &sin, None, None);
        }
        x
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.model.norm.forward(x)
    }

    /// Final hidden states `[B, T, C]` (after the final norm) for token ids `[B, T]`, causal, no padding.
    pub fn hidden(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let x = self.embed_tokens(ids);
        self.final_norm(self.run_blocks(x, 0..self.model.layers.len()))
    }

    /// The output head: `[B, T, C] → [B, T, vocab]`, as a 2-D product against `[vocab, C]`.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = hidden.dims();
        let weight = match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.weight.val(),
        };
        ops::tied_head(hidden.reshape([b * t, c]), weight).reshape([b, t, self.config.vocab_size])
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden(ids))
    }

    /// An empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.num_hidden_layers, batch)
    }

    /// Runs `t` new positions per row through the model, attending to (and extending) the cache.
    /// `tokens` and `is_pad` are `[B * T]`, row-major; padding is never attended to and does not
    /// advance its row's positions. Returns the final hidden states `[B, T, C]`.
    pub fn forward_cached(&self, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache) -> Result<Tensor<3>> {
        let step = cache.step(tokens, is_pad, self.config.max_position_embeddings, self.config.vocab_size, &self.device())?;
        let mut x = ops::embedding(&self.model.embed_tokens, step.ids);
        let (cos, sin) = self.rope.cos_sin(step.positions);
        for (layer, layer_cache) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, &cos, &sin, Some(layer_cache), step.mask.clone());
        }
        Ok(self.final_norm(x))
    }
}
