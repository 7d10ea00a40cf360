//! Model directories in the Hugging Face layout: `config.json` + `model.safetensors` (+
//! `generation_config.json`), as `transformers`' `save_pretrained` writes them.

use std::path::Path;

use burn::prelude::*;

use super::classifier_dir::classifier_labels;
use crate::error::{GptError, Result};
use crate::io::{SafetensorsSource, fill_params, named_params, write_atomic, write_safetensors};
use crate::models::gpt2::{EOT_TOKEN, Gpt, GptConfig};

/// `transformers`' `save_pretrained` writes the trunk of a `GPT2LMHeadModel` under this prefix.
const SAVE_PREFIX: &str = "transformer.";

/// Loads `dir/config.json` and the weights next to it. A missing, extra or wrong-shaped tensor
/// is an error naming the tensor (and both shapes).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<Gpt> {
    let config = GptConfig::load(&dir.join("config.json"))?;
    if classifier_labels(&config).is_some() {
        return Err(GptError::Model(format!(
            "{} holds a classifier (GPT2ForSequenceClassification), not a language model: use `llmfs classify`",
            dir.display()
        )));
    }
    let mut source = SafetensorsSource::open_dir(dir)?;
    let model = load_trunk(dir, &config, &mut source, device)?;
    source.finish()?;
    Ok(model)
}

/// The GPT-2 trunk of a checkpoint, with a shape mismatch reported against `config.json`.
pub(super) fn load_trunk(dir: &Path, config: &GptConfig, source: &mut SafetensorsSource, device: &Device) -> Result<Gpt> {
    fill_params(Gpt::skeleton(config, device), source).map_err(|e| match e {
        GptError::ShapeMismatch { path, name, expected, found } => GptError::Model(format!(
            "{}: tensor `{name}` has shape {found:?}, but {} expects {expected:?} (does config.json describe these weights?)",
            path.display(),
            dir.join("config.json").display()
        )),
        other => other,
    })
}

/// Writes `model` as an HF-format directory (`config.json`, `model.safetensors`,
/// `generation_config.json`) that `transformers` loads. Each file is written atomically, the
/// weights first, so an interrupted save never leaves a config next to half the weights.
pub fn save_model_dir(model: &Gpt, dir: &Path) -> Result<()> {
    write_model_files(dir, trunk_tensors(model), model.config().clone())
}

/// The trunk's tensors under `transformers`' names.
pub(super) fn trunk_tensors(model: &Gpt) -> Vec<(String, TensorData)> {
    named_params(model).into_iter().map(|(name, data)| (format!("{SAVE_PREFIX}{name}"), data)).collect()
}

pub(super) fn write_model_files(dir: &Path, tensors: Vec<(String, TensorData)>, config: GptConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(crate::io::safetensors::SINGLE_FILE), &tensors)?;
    config.save(&dir.join("config.json"))?;
    let generation = serde_json::json!({ "bos_token_id": EOT_TOKEN, "eos_token_id": EOT_TOKEN });
    write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&generation).unwrap_or_default().as_bytes())
}
