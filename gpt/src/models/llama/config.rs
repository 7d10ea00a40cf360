//! Llama-family hyper-parameters, read from and written to Hugging Face's `config.json`.
//!
//! One config for the four architectures, which differ only in switches: Qwen2 always has q/k/v
//! biases, Qwen3 normalises each head's queries and keys, Mistral is a Llama when it does not use
//! a sliding window. Both forms the hub has are read: transformers 4 (`rope_theta`,
//! `rope_scaling`, `torch_dtype`) and transformers 5 (`rope_parameters`, `dtype`); keys we do not
//! model stay in `extra` and are written back as they were.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{GptError, Result};

/// The architectures of the family, as `config.json` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

/// `architectures` entries and `model_type`s this family loads.
pub const SUPPORTED: [(&str, &str, Architecture); 4] = [
    ("LlamaForCausalLM", "llama", Architecture::Llama),
    ("MistralForCausalLM", "mistral", Architecture::Mistral),
    ("Qwen2ForCausalLM", "qwen2", Architecture::Qwen2),
    ("Qwen3ForCausalLM", "qwen3", Architecture::Qwen3),
];

const LM_SUFFIX: &str = "ForCausalLM";
const CLASSIFIER_SUFFIX: &str = "ForSequenceClassification";

impl Architecture {
    /// From `config.json`'s `architectures` (first entry; the language model's class or its
    /// sequence classifier's) or, without one, its `model_type`.
    pub fn from_names(architectures: Option<&str>, model_type: Option<&str>) -> Option<Self> {
        SUPPORTED.iter().find(|(arch, ty, _)| match architectures {
            Some(name) => name == *arch || name.strip_suffix(CLASSIFIER_SUFFIX) == arch.strip_suffix(LM_SUFFIX),
            None => model_type == Some(*ty),
        }).map(|entry| entry.2)
    }

    /// The class of the architecture's sequence classifier (`LlamaForSequenceClassification` ...).
    pub fn classifier_class_name(self) -> String {
        format!("{}{CLASSIFIER_SUFFIX}", self.class_name().trim_end_matches(LM_SUFFIX))
    }

    pub fn class_name(self) -> &'static str {
        SUPPORTED.iter().find(|entry| entry.2 == self).map_or("LlamaForCausalLM", |entry| entry.0)
    }

    pub fn model_type(self) -> &'static str {
        SUPPORTED.iter().find(|entry| entry.2 == self).map_or("llama", |entry| entry.1)
    }
}

/// How rotary position embeddings turn positions into angles (transformers' `rope_type`s we
/// compute: `default`, `linear`, and Llama 3.1's `llama3`).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The architecture of one Llama-family model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads (1 = multi-query);
    /// `None` = as many as query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// `None` (or null) = `hidden_size / num_attention_heads`; Qwen3 sets it explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Biases on q, k, v and o (Llama, Qwen3); Qwen2 has q/k/v biases whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Every other key of `config.json` (architectures, model_type, rope settings, token ids,
    /// dtype ...), kept so that saving writes it back.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}
fn default_init_range() -> f64 {
    0.02
}

/// Sanity bounds of [`LlamaConfig::validate`] (a corrupt config must not make the loader ask for
/// absurd memory before a weight is read).
const MAX_LAYERS: usize = 4096;
const MAX_PARAMS: usize = 1 << 42;

/// Random-weight shapes of real checkpoints (`random:<name>`), for benchmarks and smoke tests.
pub const PRESETS: [&str; 5] = ["smollm2-135m", "smollm2-360m", "qwen3-0.6b", "llama-3.2-1b", "llama-tiny"];

impl LlamaConfig {
    /// The shapes of `HuggingFaceTB/SmolLM2-135M`, `-360M`, `Qwen/Qwen3-0.6B`,
    /// `meta-llama/Llama-3.2-1B`, and `llama-tiny` (the test fixture's shape).
    pub fn preset(name: &str) -> Option<Self> {
        let json = match name {
            "smollm2-135m" => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true,
                "bos_token_id": 1, "eos_token_id": 2}),
            "smollm2-360m" => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152, "hidden_size": 960,
                "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15, "num_key_value_heads": 5,
                "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true,
                "bos_token_id": 1, "eos_token_id": 2}),
            "qwen3-0.6b" => serde_json::json!({
                "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
                "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
                "head_dim": 128, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151645}),
            "llama-3.2-1b" => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
                "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
                "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}),
            "llama-tiny" => serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 32,
                "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 8, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
                "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64, "rope_theta": 500000.0, "rope_type": "llama3"},
                "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}),
            _ => return None,
        };
        serde_json::from_value(json).ok()
    }

    pub fn architecture(&self) -> Result<Architecture> {
        let architectures = self.extra.get("architectures").and_then(|a| a.as_array()).and_then(|a| a.first()).and_then(Value::as_str);
        let model_type = self.extra.get("model_type").and_then(Value::as_str);
        Architecture::from_names(architectures, model_type).ok_or_else(|| unsupported(architectures, model_type))
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Biases on the q, k and v projections.
    pub fn qkv_bias(&self) -> bool {
        self.architecture().ok() == Some(Architecture::Qwen2) || self.attention_bias.unwrap_or(false)
    }

    /// A bias on the output projection (Qwen2 has none).
    pub fn o_bias(&self) -> bool {
        self.architecture().ok() != Some(Architecture::Qwen2) && self.attention_bias.unwrap_or(false)
    }

    /// Per-head RMSNorm of queries and keys before the rotation (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.architecture().ok() == Some(Architecture::Qwen3)
    }

    /// The rotary embedding's base and scaling, from `rope_parameters` (transformers 5) or
    /// `rope_theta` + `rope_scaling` (transformers 4).
    pub fn rope(&self) -> Result<RopeConfig> {
        let params = self.extra.get("rope_parameters").filter(|v| !v.is_null());
        let scaling = self.extra.get("rope_scaling").filter(|v| !v.is_null());
        let number = |object: Option<&Value>, key: &str| object.and_then(|o| o.get(key)).and_then(Value::as_f64);
        let theta = number(params, "rope_theta").or_else(|| self.extra.get("rope_theta").and_then(Value::as_f64)).unwrap_or(10_000.0);
        let settings = params.or(scaling);
        let rope_type = settings
            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let need = |key: &str| {
            number(settings, key).ok_or_else(|| GptError::Config(format!("rope type {rope_type:?} needs `{key}` in its rope settings")))
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            },
            other => {
                return Err(GptError::Config(format!(
                    "rope type {other:?} is not supported (supported: \"default\", \"linear\", \"llama3\")"
                )));
            }
        };
        Ok(RopeConfig { theta, scaling })
    }

    /// Token ids `config.json` names as end of sequence (a number or a list).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        token_ids(self.extra.get("eos_token_id"))
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        token_ids(self.extra.get("bos_token_id")).first().copied()
    }

    /// Number of parameters (a tied head counted once); `None` when it overflows (a corrupt config).
    fn checked_num_params(&self) -> Option<usize> {
        let (c, v, f) = (self.hidden_size, self.vocab_size, self.intermediate_size);
        let (q, kv) = (self.num_attention_heads.checked_mul(self.head_dim())?, self.kv_heads().checked_mul(self.head_dim())?);
        let attention = c.checked_mul(q.checked_mul(2)?.checked_add(kv.checked_mul(2)?)?)?;
        let qk_norm = if self.qk_norm() { 2 * self.head_dim() } else { 0 };
        let biases = if self.qkv_bias() { q + 2 * kv } else { 0 } + if self.o_bias() { c } else { 0 };
        let block = [attention, c.checked_mul(f)?.checked_mul(3)?, 2 * c, qk_norm, biases].into_iter().try_fold(0usize, usize::checked_add)?;
        let head = if self.tie_word_embeddings { 0 } else { v.checked_mul(c)? };
        [v.checked_mul(c)?, head, self.num_hidden_layers.checked_mul(block)?, c].into_iter().try_fold(0usize, usize::checked_add)
    }

    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Checks that this is an architecture this implementation computes exactly.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(GptError::Config(msg));
        let architecture = self.architecture()?;
        let sizes = [self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.num_attention_heads];
        if sizes.contains(&0) || self.kv_heads() == 0 || self.head_dim() == 0 || self.max_position_embeddings == 0 {
            return bad("vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, \
                        num_key_value_heads, head_dim and max_position_embeddings must all be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.num_hidden_layers > MAX_LAYERS || self.checked_num_params().is_none_or(|n| n > MAX_PARAMS) {
            return bad(format!(
                "{} layers of hidden size {} with vocab {} make an implausible model: is this config.json corrupt?",
                self.num_hidden_layers, self.hidden_size, self.vocab_size
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?} is not supported (the Llama family uses \"silu\")", self.hidden_act));
        }
        if self.mlp_bias {
            return bad("mlp_bias = true is not supported".into());
        }
        if !(self.rms_norm_eps > 0.0) {
            return bad(format!("rms_norm_eps {} must be positive", self.rms_norm_eps));
        }
        if !(0.0..1.0).contains(&self.attention_dropout) {
            return bad(format!("attention_dropout {} must be in [0, 1)", self.attention_dropout));
        }
        let sliding = match architecture {
            Architecture::Mistral => self.extra.get("sliding_window").is_some_and(|w| !w.is_null()),
            _ => self.extra.get("use_sliding_window").and_then(Value::as_bool).unwrap_or(false),
        };
        if sliding {
            return bad(format!("{}: sliding-window attention is not supported", architecture.class_name()));
        }
        self.rope().map(|_| ())
    }

    /// Reads and validates an HF `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GptError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e })?;
        config.validate().map_err(|e| GptError::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// The `config.json` `transformers` reads back: every key we read, and the others as they were.
    pub fn to_hf_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or_default();
        if let (Some(map), Ok(architecture)) = (json.as_object_mut(), self.architecture()) {
            map.entry("architectures").or_insert(serde_json::json!([architecture.class_name()]));
            map.entry("model_type").or_insert(architecture.model_type().into());
        }
        json
    }

    /// Writes `config.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_json()).unwrap_or_default();
        crate::io::write_atomic(path, text.as_bytes())
    }
}

/// `token_id` fields are a number, a list of numbers, or null.
pub fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => Vec::new(),
    }
}

/// The error for a `config.json` of an architecture no family here implements.
pub fn unsupported(architectures: Option<&str>, model_type: Option<&str>) -> GptError {
    let name = architectures.or(model_type).unwrap_or("(none: config.json has neither `architectures` nor `model_type`)");
    let supported: Vec<&str> = std::iter::once("GPT2LMHeadModel").chain(SUPPORTED.iter().map(|e| e.0)).collect();
    GptError::Config(format!("architecture {name} is not supported; supported: {}", supported.join(", ")))
}
