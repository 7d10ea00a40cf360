//! LoRA adapters on disk in PEFT's layout, so `peft.PeftModel.from_pretrained(base, DIR)` loads
//! them: `adapter_config.json` + `adapter_model.safetensors` with
//! `base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight` (GPT-2) or
//! `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (Llama family) `[r, in]`
//! and `lora_B.weight` `[out, r]` (PyTorch's `nn.Linear` layout: the transposes of Burn's `A`
//! and `B`, whatever the layout of the adapted weight).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{LoraConfig, LoraTarget, LoraTargets};
use crate::error::{GptError, Result};
use crate::models::LanguageModel;
use crate::io::{SafetensorsSource, TensorSource, fill_params_matching, named_params, write_atomic, write_safetensors};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// PEFT's prefix of every adapter tensor (`PeftModel` → `LoraModel` → the HF model).
const PEFT_PREFIX: &str = "base_model.model.";

/// What the adapter was trained for (PEFT's `task_type`; PEFT writes `null` when none was given,
/// which is read as a language model's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdapterTask {
    #[serde(rename = "CAUSAL_LM")]
    CausalLm,
    #[serde(rename = "SEQ_CLS")]
    SequenceClassification,
}

fn task_or_language_model<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<AdapterTask, D::Error> {
    Ok(Option::<AdapterTask>::deserialize(deserializer)?.unwrap_or(AdapterTask::CausalLm))
}

/// `adapter_config.json`: PEFT's keys, which PEFT reads back as a `LoraConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    #[serde(default = "language_model", deserialize_with = "task_or_language_model")]
    pub task_type: AdapterTask,
    /// What `--model` named when training: a hub id or an absolute directory.
    pub base_model_name_or_path: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    /// GPT-2's `Conv1D` stores weights `[in, out]`; PEFT must know to transpose (the Llama
    /// family's `nn.Linear` weights are `[out, in]`: false).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "no_bias")]
    pub bias: String,
    /// Modules trained in full next to the adapters (the classifier's `score`).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub inference_mode: bool,
    /// PEFT variants llmfs does not compute (a clear error rather than other numbers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_dora: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_rslora: bool,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn language_model() -> AdapterTask {
    AdapterTask::CausalLm
}

fn no_bias() -> String {
    "none".into()
}

impl AdapterConfig {
    pub fn new(lora: &LoraConfig, task: AdapterTask, base_model: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: task,
            base_model_name_or_path: base_model_reference(base_model),
            r: lora.rank,
            lora_alpha: lora.alpha,
            target_modules: lora.targets.modules(),
            fan_in_fan_out: lora.targets.is_gpt2() != Some(false),
            lora_dropout: 0.0,
            bias: no_bias(),
            modules_to_save: (task == AdapterTask::SequenceClassification).then(|| vec!["score".to_string()]),
            inference_mode: true,
            use_dora: false,
            use_rslora: false,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| GptError::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e })?;
        if config.peft_type != "LORA" {
            return Err(GptError::Model(format!("{}: peft_type {:?} is not supported (only LORA)", path.display(), config.peft_type)));
        }
        let unsupported = [
            (config.use_dora, "use_dora (DoRA)"),
            (config.use_rslora, "use_rslora (scaling alpha/sqrt(r))"),
            (!config.rank_pattern.is_empty(), "rank_pattern (per-module ranks)"),
            (!config.alpha_pattern.is_empty(), "alpha_pattern (per-module alphas)"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(used, _)| *used) {
            return Err(GptError::Model(format!("{}: {what} is not supported (plain LoRA only)", path.display())));
        }
        if config.bias != "none" {
            return Err(GptError::Model(format!("{}: LoRA bias {:?} is not supported (only \"none\")", path.display(), config.bias)));
        }
        config.lora().map_err(|e| GptError::Model(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Checks that the adapter fits `base`'s family: some of its targets are `base`'s projections,
    /// and `fan_in_fan_out` says how they are stored (GPT-2's Conv1D `[in, out]`, the Llama
    /// family's `nn.Linear` `[out, in]`).
    pub fn check_base(&self, base: &LanguageModel) -> Result<()> {
        self.lora()?.for_model(base)?;
        match (base, self.fan_in_fan_out) {
            (LanguageModel::Gpt2(_), false) => {
                Err(GptError::Model("fan_in_fan_out is false, but GPT-2's Conv1D weights are [in, out]: this adapter is not for GPT-2".into()))
            }
            (LanguageModel::Llama(_), true) => Err(GptError::Model(
                "fan_in_fan_out is true, but the Llama family's Linear weights are [out, in]: this adapter is not for a Llama-family model".into(),
            )),
            _ => Ok(()),
        }
    }

    pub fn lora(&self) -> Result<LoraConfig> {
        LoraConfig::new(self.r, self.lora_alpha, LoraTargets::from_names(&self.target_modules)?)
    }
}

/// A local base directory is recorded by its absolute path (the adapter may be used from
/// elsewhere); a hub id as it is.
fn base_model_reference(base_model: &str) -> String {
    let path = Path::new(base_model);
    if path.is_dir()
        && let Ok(absolute) = std::fs::canonicalize(path)
    {
        return absolute.to_string_lossy().into_owned();
    }
    base_model.to_string()
}

/// Whether `dir` holds an adapter (`adapter_config.json`).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// The PEFT name of an adapter factor from its HF-style path (`h.0.attn.c_attn.weight.lora.a`,
/// `model.layers.0.self_attn.q_proj.weight.lora.a`), and whether it is `A` (else `B`); `None`
/// for other parameters. GPT-2's trunk is saved under `transformer.` (our paths start at `h.`);
/// the Llama family's paths are HF's names already.
pub(super) fn peft_name(name: &str) -> Option<(String, bool)> {
    let (module, factor) = name.rsplit_once(".weight.lora.")?;
    let is_a = match factor {
        "a" => true,
        "b" => false,
        _ => return None,
    };
    let matrix = if is_a { "lora_A" } else { "lora_B" };
    let trunk = if module.starts_with("model.") { "" } else { "transformer." };
    Some((format!("{PEFT_PREFIX}{trunk}{module}.{matrix}.weight"), is_a))
}

/// A 2-D f32 tensor transposed on the host (`[r, c]` → `[c, r]`).
fn transpose(data: &TensorData) -> Result<TensorData> {
    let shape = data.shape().to_vec();
    let [rows, cols] = shape[..] else {
        return Err(GptError::Tensor(format!("expected a 2-D tensor, got shape {shape:?}")));
    };
    let values: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| GptError::Tensor(format!("{e:?}")))?;
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    Ok(TensorData::new(out, [cols, rows]))
}

/// The adapter factors of a LoRA'd model under PEFT's names and layout.
pub fn adapter_tensors<M: Module>(gpt: &M) -> Result<Vec<(String, TensorData)>> {
    let mut tensors = Vec::new();
    for (name, data) in named_params(gpt) {
        if let Some((peft, _)) = peft_name(&name) {
            tensors.push((peft, transpose(&data)?));
        }
    }
    if tensors.is_empty() {
        return Err(GptError::Model("the model has no LoRA adapters to save".into()));
    }
    Ok(tensors)
}

/// Writes a LoRA'd trunk's adapters (and `extra` tensors under their own names, e.g. a
/// classifier head) as `dir/adapter_config.json` + `dir/adapter_model.safetensors`, the weights
/// first, each atomically.
/// `target_modules` and `fan_in_fan_out` are those of the adapters the model has (`attn` names
/// both families' projections; a model has one family's).
pub fn save_adapter_dir<M: Module>(dir: &Path, gpt: &M, config: &AdapterConfig, extra: Vec<(String, TensorData)>) -> Result<()> {
    let mut tensors = adapter_tensors(gpt)?;
    let targets = attached_targets(&tensors)?;
    let config = AdapterConfig {
        target_modules: targets.modules(),
        fan_in_fan_out: targets.is_gpt2() == Some(true),
        ..config.clone()
    };
    tensors.extend(extra.into_iter().map(|(name, data)| (format!("{PEFT_PREFIX}{name}"), data)));
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    let text = serde_json::to_string_pretty(&config).map_err(|e| GptError::Model(e.to_string()))?;
    write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
}

/// The projections that carry the adapters among PEFT-named `tensors`.
fn attached_targets(tensors: &[(String, TensorData)]) -> Result<LoraTargets> {
    let modules: Vec<&str> = tensors
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".lora_A.weight"))
        .filter_map(|module| LoraTarget::GPT2.into_iter().chain(LoraTarget::LLAMA).find(|t| module.ends_with(&format!(".{}", t.module()))))
        .map(LoraTarget::peft_module)
        .collect();
    LoraTargets::from_names(&modules)
}

/// An adapter directory opened for loading: its config and its tensors.
pub struct AdapterSource {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    tensors: SafetensorsSource,
}

impl AdapterSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG))?;
        let tensors = SafetensorsSource::open_files(&[dir.join(ADAPTER_WEIGHTS)])?;
        Ok(Self { dir: dir.to_path_buf(), config, tensors })
    }

    /// Attaches the adapters to `gpt` (the base model) and fills them from the file; everything
    /// else keeps the base's values. A missing or wrong-shaped factor names the tensor.
    pub fn attach<M: Module>(&mut self, gpt: M) -> Result<M> {
        let lora = self.config.lora()?;
        fill_params_matching(lora.attach_unfilled(gpt), self, |name| peft_name(name).is_some())
    }

    /// A non-adapter tensor stored next to the adapters (`score.weight`), by its HF name.
    pub fn extra_tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        self.tensors.tensor(&format!("{PEFT_PREFIX}{name}"), shape)
    }

    /// Call after everything was read: an adapter tensor no target asked for is an error.
    pub fn finish(self) -> Result<()> {
        self.tensors.finish()
    }
}

impl TensorSource for AdapterSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let (peft, _) = peft_name(name).ok_or_else(|| GptError::Model(format!("`{name}` is not a LoRA factor")))?;
        let stored_shape: Vec<usize> = shape.iter().rev().copied().collect();
        transpose(&self.tensors.tensor(&peft, &stored_shape)?)
    }
}
