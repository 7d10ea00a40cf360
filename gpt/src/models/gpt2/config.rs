//! GPT-2 hyper-parameters, read from and written to Hugging Face's `config.json`.
//!
//! The field names are HF's (`n_layer`, `n_positions`, `layer_norm_epsilon`, ...), so a config
//! round-trips through `transformers` unchanged; keys we do not model are kept in `extra` and
//! written back as they were.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{GptError, Result};

/// The end-of-text token of the GPT-2 BPE, also the padding token we use.
pub const EOT_TOKEN: u32 = 50256;
/// Size of the GPT-2 BPE vocabulary.
pub const GPT2_VOCAB_SIZE: usize = 50257;

/// The architecture of one GPT-2 model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Context window. OpenAI's configs also carry the same number as `n_ctx` (kept in `extra`);
    /// a config with only `n_ctx` gets it from there (see [`GptConfig::from_hf_json`]).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Dropout on the embeddings, the attention weights and each residual branch.
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    /// Standard deviation of the GPT-2 initialisation.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Width of the MLP; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Every other key of `config.json`, kept so that saving writes it back.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_dropout() -> f64 {
    0.1
}
fn default_init_range() -> f64 {
    0.02
}
fn default_activation() -> String {
    "gelu_new".to_string()
}

/// Sanity bounds of [`GptConfig::validate`] (GPT-2 XL has 48 layers and 1.6 B parameters).
const MAX_LAYERS: usize = 4096;
const MAX_PARAMS: usize = 1 << 40;

/// The OpenAI GPT-2 sizes on the Hugging Face hub, plus a tiny one for tests.
pub const PRESETS: [&str; 6] = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "mini"];

impl GptConfig {
    /// A GPT-2 shaped config with the usual defaults (vocab 50257, dropout 0.1, eps 1e-5).
    pub fn new(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> Self {
        Self {
            vocab_size: GPT2_VOCAB_SIZE,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            layer_norm_epsilon: default_eps(),
            embd_pdrop: default_dropout(),
            attn_pdrop: default_dropout(),
            resid_pdrop: default_dropout(),
            initializer_range: default_init_range(),
            activation_function: default_activation(),
            n_inner: None,
            extra: serde_json::Map::new(),
        }
    }

    /// `gpt2` (124M), `gpt2-medium` (355M), `gpt2-large` (774M), `gpt2-xl` (1558M) or `tiny`
    /// (2 layers, 4 heads, 64 wide, 128 positions: the shape of the test fixture).
    pub fn preset(name: &str) -> Option<Self> {
        let (n_layer, n_head, n_embd, n_positions) = match name {
            "gpt2" => (12, 12, 768, 1024),
            "gpt2-medium" => (24, 16, 1024, 1024),
            "gpt2-large" => (36, 20, 1280, 1024),
            "gpt2-xl" => (48, 25, 1600, 1024),
            "tiny" => (2, 4, 64, 128),
            // Small enough to pretrain on a CPU in minutes (the offline demo, examples/pretrain.rs).
            "mini" => (4, 4, 128, 256),
            _ => return None,
        };
        Some(Self::new(n_layer, n_head, n_embd, n_positions))
    }

    /// Sets all three dropout probabilities.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.embd_pdrop = p;
        self.attn_pdrop = p;
        self.resid_pdrop = p;
        self
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn mlp_width(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Number of parameters (the tied output head counted once).
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// [`Self::num_params`], `None` when it does not fit a `usize` (a corrupt config).
    fn checked_num_params(&self) -> Option<usize> {
        let (c, v, p) = (self.n_embd, self.vocab_size, self.n_positions);
        let f = match self.n_inner {
            Some(f) => f,
            None => c.checked_mul(4)?,
        };
        // c·c fits, so the small multiples of c below do too.
        let square = c.checked_mul(c)?;
        let block = [4 * c, square.checked_mul(3)?, 3 * c, square, c, c.checked_mul(f)?, f, f.checked_mul(c)?, c]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        [v.checked_mul(c)?, p.checked_mul(c)?, self.n_layer.checked_mul(block)?, 2 * c].into_iter().try_fold(0usize, usize::checked_add)
    }

    /// Checks that the architecture is one this implementation computes exactly.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(GptError::Config(msg));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.n_positions == 0 {
            return bad("n_layer, n_head, n_embd and n_positions must all be positive".into());
        }
        if self.vocab_size == 0 {
            return bad("vocab_size must be positive".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        // A corrupt or hostile config.json must not make the loader ask for absurd memory before a
        // weight is read: bounds far above GPT-2 XL (48 layers, 1600 wide, 1.6 B parameters).
        if self.n_layer > MAX_LAYERS {
            return bad(format!("n_layer {} is more than {MAX_LAYERS}: is this config.json corrupt?", self.n_layer));
        }
        match self.checked_num_params() {
            Some(params) if params <= MAX_PARAMS => {}
            _ => {
                return bad(format!(
                    "n_embd {}, n_layer {}, vocab_size {}, n_positions {} and n_inner {:?} make more than 2^40 parameters: \
                     is this config.json corrupt?",
                    self.n_embd, self.n_layer, self.vocab_size, self.n_positions, self.n_inner
                ));
            }
        }
        // HF calls the tanh approximation `gelu_new`; `gelu_pytorch_tanh` is the same function.
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return bad(format!(
                "activation_function {:?} is not supported (GPT-2 uses \"gelu_new\", the tanh approximation)",
                self.activation_function
            ));
        }
        for (key, expected) in [
            ("scale_attn_by_inverse_layer_idx", false),
            ("tie_word_embeddings", true),
            ("scale_attn_weights", true),
            ("add_cross_attention", false),
        ] {
            if let Some(value) = self.extra.get(key).and_then(|v| v.as_bool())
                && value != expected
            {
                return bad(format!("{key} = {value} is not supported (GPT-2 uses {expected})"));
            }
        }
        for (name, p) in [("embd_pdrop", self.embd_pdrop), ("attn_pdrop", self.attn_pdrop), ("resid_pdrop", self.resid_pdrop)] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} = {p} must be in [0, 1)"));
            }
        }
        if !(self.layer_norm_epsilon > 0.0) {
            return bad(format!("layer_norm_epsilon {} must be positive", self.layer_norm_epsilon));
        }
        Ok(())
    }

    /// Parses the text of an HF `config.json` (not validated).
    pub fn from_hf_json(text: &str) -> serde_json::Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(map) = value.as_object_mut()
            && !map.contains_key("n_positions")
            && let Some(n_ctx) = map.get("n_ctx").cloned()
        {
            map.insert("n_positions".to_string(), n_ctx);
        }
        serde_json::from_value(value)
    }

    /// Reads and validates an HF `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GptError::io(path, e))?;
        let config = Self::from_hf_json(&text).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e })?;
        config.validate().map_err(|e| GptError::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The `config.json` that `transformers` expects for a `GPT2LMHeadModel`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self).expect("a GptConfig always serialises");
        let map = json.as_object_mut().expect("a GptConfig serialises to an object");
        let defaults = [
            ("model_type", serde_json::json!("gpt2")),
            ("architectures", serde_json::json!(["GPT2LMHeadModel"])),
            ("bos_token_id", serde_json::json!(EOT_TOKEN)),
            ("eos_token_id", serde_json::json!(EOT_TOKEN)),
            ("tie_word_embeddings", serde_json::json!(true)),
            ("scale_attn_weights", serde_json::json!(true)),
            ("use_cache", serde_json::json!(true)),
        ];
        for (key, value) in defaults {
            map.entry(key).or_insert(value);
        }
        json
    }

    /// Writes `config.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_json()).expect("JSON values always serialise");
        crate::io::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parameter_counts_match_openai_gpt2() {
        // Parameter counts of the HF checkpoints (tied head counted once).
        assert_eq!(GptConfig::preset("gpt2").unwrap().num_params(), 124_439_808);
        assert_eq!(GptConfig::preset("gpt2-medium").unwrap().num_params(), 354_823_168);
        assert_eq!(GptConfig::preset("gpt2-large").unwrap().num_params(), 774_030_080);
        assert_eq!(GptConfig::preset("gpt2-xl").unwrap().num_params(), 1_557_611_200);
        assert!(GptConfig::preset("gpt3").is_none());
    }

    #[test]
    fn rejects_unsupported_architectures() {
        let mut c = GptConfig::preset("tiny").unwrap();
        c.n_head = 5;
        assert!(c.validate().unwrap_err().to_string().contains("not divisible by n_head 5"));
        let mut c = GptConfig::preset("tiny").unwrap();
        c.activation_function = "relu".into();
        assert!(c.validate().unwrap_err().to_string().contains("\"relu\""));
        let mut c = GptConfig::preset("tiny").unwrap();
        c.extra.insert("tie_word_embeddings".into(), false.into());
        assert!(c.validate().unwrap_err().to_string().contains("tie_word_embeddings"));
    }

    /// `config.json` of `openai-community/gpt2` on the hub, as it is there.
    const OPENAI_GPT2_CONFIG: &str = r#"{
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "embd_pdrop": 0.1,
  "eos_token_id": 50256,
  "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 768,
  "n_head": 12,
  "n_layer": 12,
  "n_positions": 1024,
  "resid_pdrop": 0.1,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
  "vocab_size": 50257
}"#;

    #[test]
    fn reads_openai_configs_with_both_n_ctx_and_n_positions() {
        let c = GptConfig::from_hf_json(OPENAI_GPT2_CONFIG).unwrap();
        c.validate().unwrap();
        assert_eq!(c, GptConfig { extra: c.extra.clone(), ..GptConfig::preset("gpt2").unwrap() });
        assert_eq!(c.extra["n_ctx"], 1024);
        assert_eq!(c.extra["task_specific_params"]["text-generation"]["max_length"], 50);
    }

    #[test]
    fn hf_json_round_trip_keeps_unknown_keys() {
        // Only `n_ctx`, as in some old exports.
        let text = r#"{"vocab_size": 50257, "n_ctx": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                       "summary_type": "cls_index", "labels": ["ham", "spam"]}"#;
        let c = GptConfig::from_hf_json(text).unwrap();
        assert_eq!(c.n_positions, 1024);
        assert_eq!(c, GptConfig { extra: c.extra.clone(), ..GptConfig::preset("gpt2").unwrap() });
        let back = GptConfig::from_hf_json(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(back.extra["labels"], serde_json::json!(["ham", "spam"]));
        assert_eq!(back.extra["model_type"], "gpt2");
        assert_eq!(back.n_positions, 1024);
    }
}
