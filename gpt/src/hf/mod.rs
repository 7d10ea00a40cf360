//! What a directory or a `--model` string is: Hugging Face model directories, classifier
//! directories, LoRA adapter directories, hub ids and `random:<preset>`. Built on [`crate::io`]
//! (files, safetensors, the hub) and the models.

pub mod adapter_dir;
pub mod classifier_dir;
pub mod model_dir;

use std::path::{Path, PathBuf};

use burn::prelude::*;

pub use adapter_dir::{load_base, load_merged};
pub use classifier_dir::{classifier_labels, is_classifier_dir, load_classifier_dir, save_classifier_adapter_dir, save_classifier_dir};
pub use model_dir::{load_model_dir, save_model_dir};

use crate::error::{GptError, Result};
use crate::io::{HubOptions, fetch_model, hub};
use crate::lora::{ADAPTER_CONFIG, is_adapter_dir};
use crate::models::gpt2::{Gpt, GptConfig, PRESETS};

/// What `--model M` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A local HF-format directory.
    Dir(PathBuf),
    /// A hub repo id (`gpt2`, `openai-community/gpt2-medium`), fetched into the HF cache.
    Hub(String),
    /// `random:<preset>`: a seeded random model of a preset's shape (benchmarks, smoke tests).
    Random(String),
    /// A LoRA adapter directory (`adapter_config.json` naming its base model), loaded merged.
    Adapter(PathBuf),
}

impl ModelSpec {
    /// Interprets `--model`: an existing directory (an HF model directory or a LoRA adapter
    /// directory), `random:<preset>`, or else a hub repo id. Run directories are the training
    /// pipelines' (`pipelines::runs::ModelRef` resolves them to one of these).
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(preset) = text.strip_prefix("random:") {
            if GptConfig::preset(preset).is_none() {
                return Err(GptError::Model(format!(
                    "unknown preset {preset:?} in {text:?}: expected one of {}",
                    PRESETS.join(", ")
                )));
            }
            return Ok(Self::Random(preset.to_string()));
        }
        let path = Path::new(text);
        if path.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(Self::Dir(path.to_path_buf()));
            }
            if is_adapter_dir(path) {
                return Ok(Self::Adapter(path.to_path_buf()));
            }
            return Err(GptError::Model(format!(
                "{}: neither a model directory (config.json + {}) nor an adapter directory ({})",
                path.display(),
                crate::io::safetensors::SINGLE_FILE,
                ADAPTER_CONFIG
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
            Self::Adapter(dir) => load_merged(dir, device, hub, seed),
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
