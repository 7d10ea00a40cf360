//! Model directories in the Hugging Face layout (`config.json` + `model.safetensors`), the hub,
//! and what `--model M` means.

pub mod hub;
pub mod params;
pub mod safetensors_io;

use std::path::{Path, PathBuf};

use burn::prelude::*;

pub use hub::{HubOptions, fetch_model};
pub use params::{RandomInit, TensorSource, fill_params, hf_name, named_params};
pub use safetensors_io::{SafetensorsSource, write_safetensors};

use crate::config::GptConfig;
use crate::error::{GptError, Result};
use crate::fsutil::write_atomic;
use crate::model::Gpt;

/// `transformers`' `save_pretrained` writes the trunk of a `GPT2LMHeadModel` under this prefix.
const SAVE_PREFIX: &str = "transformer.";

/// Loads `dir/config.json` and the weights next to it. A missing, extra or wrong-shaped tensor
/// is an error naming the tensor (and both shapes).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<Gpt> {
    let config = GptConfig::load(&dir.join("config.json"))?;
    let mut source = SafetensorsSource::open_dir(dir)?;
    let model = fill_params(Gpt::skeleton(&config, device), &mut source).map_err(|e| match e {
        GptError::ShapeMismatch { path, name, expected, found } => GptError::Model(format!(
            "{}: tensor `{name}` has shape {found:?}, but {} expects {expected:?} (does config.json describe these weights?)",
            path.display(),
            dir.join("config.json").display()
        )),
        other => other,
    })?;
    source.finish()?;
    Ok(model)
}

/// Writes `model` as an HF-format directory (`config.json`, `model.safetensors`,
/// `generation_config.json`) that `transformers` loads. Each file is written atomically, the
/// weights first, so an interrupted save never leaves a config next to half the weights.
pub fn save_model_dir(model: &Gpt, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(safetensors_io::SINGLE_FILE), &named_params(model), SAVE_PREFIX)?;
    model.config().save(&dir.join("config.json"))?;
    let generation = serde_json::json!({ "bos_token_id": crate::EOT_TOKEN, "eos_token_id": crate::EOT_TOKEN });
    write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&generation).unwrap_or_default().as_bytes())
}

/// What `--model M` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A local HF-format directory.
    Dir(PathBuf),
    /// A hub repo id (`gpt2`, `openai-community/gpt2-medium`), fetched into the HF cache.
    Hub(String),
    /// `random:<preset>`: a seeded random model of a preset's shape (benchmarks, smoke tests).
    Random(String),
}

impl ModelSpec {
    /// Interprets `--model`: an existing directory (an HF model directory, or a run directory
    /// holding one under `model/`), `random:<preset>`, or else a hub repo id.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(preset) = text.strip_prefix("random:") {
            if GptConfig::preset(preset).is_none() {
                return Err(GptError::Model(format!(
                    "unknown preset {preset:?} in {text:?}: expected one of {}",
                    crate::config::PRESETS.join(", ")
                )));
            }
            return Ok(Self::Random(preset.to_string()));
        }
        let path = Path::new(text);
        if path.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(Self::Dir(path.to_path_buf()));
            }
            let run_model = path.join("model");
            if run_model.join("config.json").is_file() {
                return Ok(Self::Dir(run_model));
            }
            return Err(GptError::Model(format!(
                "{}: neither a model directory (config.json + {}) nor a run directory (model/config.json)",
                path.display(),
                safetensors_io::SINGLE_FILE
            )));
        }
        let looks_like_path = text.starts_with(['.', '/', '~']) || text.contains('\\') || path.exists();
        if looks_like_path || !hub::is_repo_id(text) {
            return Err(GptError::Model(format!("{text}: no such model directory (and not a hub repo id)")));
        }
        Ok(Self::Hub(text.to_string()))
    }

    /// Loads the model, downloading it first when it is a hub id not yet cached.
    pub fn load(&self, device: &Device, hub: &HubOptions, seed: u64) -> Result<Gpt> {
        match self {
            Self::Dir(dir) => load_model_dir(dir, device),
            Self::Hub(repo) => load_model_dir(&fetch_model(repo, hub)?, device),
            Self::Random(preset) => {
                let config = GptConfig::preset(preset).ok_or_else(|| GptError::Model(format!("unknown preset {preset}")))?;
                Gpt::init(&config, seed, device)
            }
        }
    }
}

/// Loads what `--model M` names (see [`ModelSpec::parse`]), with the hub settings of the environment.
pub fn load_model(spec: &str, device: &Device, seed: u64) -> Result<Gpt> {
    ModelSpec::parse(spec)?.load(device, &HubOptions::from_env(), seed)
}
