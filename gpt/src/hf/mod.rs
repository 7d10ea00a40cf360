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
pub use model_dir::{
    Family, family_of, load_language_model_dir, load_language_model_dir_as, load_language_model_dir_quantized, load_llama_dir, load_model_dir, save_language_model_dir,
    save_llama_dir, save_model_dir,
};

use crate::error::{GptError, Result};
use crate::io::{HubOptions, MatricesAs, WeightDtype, cast_matrices, fetch_model, hub};
use crate::quant::{QuantizeAtLoad, Quantized, fill_quantized};
use crate::lora::{ADAPTER_CONFIG, is_adapter_dir};
use crate::models::LanguageModel;
use crate::text::Tokenizer;
use crate::models::gpt2::{Gpt, GptConfig, PRESETS, RandomInit};
use crate::models::llama::init::LlamaInit;
use crate::models::llama::{Llama, LlamaConfig, config::PRESETS as LLAMA_PRESETS};

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
            if GptConfig::preset(preset).is_none() && LlamaConfig::preset(preset).is_none() {
                return Err(GptError::Model(format!(
                    "unknown preset {preset:?} in {text:?}: expected one of {}, {}",
                    PRESETS.join(", "),
                    LLAMA_PRESETS.join(", ")
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
            Self::Adapter(dir) => match load_merged(dir, device, hub, seed)? {
                LanguageModel::Gpt2(model) => Ok(model),
                LanguageModel::Llama(_) => Err(GptError::Model(format!(
                    "{}: the adapter's base is a Llama-family model; this command runs GPT-2 models only so far",
                    dir.display()
                ))),
            },
            Self::Random(preset) => Gpt::init(&gpt2_preset(preset)?, seed, device),
        }
    }

    /// Loads a language model of any family (GPT-2, the Llama family).
    pub fn load_language_model(&self, device: &Device, hub: &HubOptions, seed: u64) -> Result<LanguageModel> {
        self.load_language_model_as(device, hub, seed, WeightDtype::F32)
    }

    /// [`Self::load_language_model`] with the weight matrices kept as `dtype` (`--dtype`): read
    /// so from a checkpoint, rounded tensor by tensor at a random preset's init, and after the
    /// merge for an adapter (its factors fold into the base in f32).
    pub fn load_language_model_as(&self, device: &Device, hub: &HubOptions, seed: u64, dtype: WeightDtype) -> Result<LanguageModel> {
        self.load_language_model_quantized(device, hub, seed, dtype, None)?.attach()
    }

    /// [`Self::load_language_model_as`] with the weights `quantize` targets quantized as they are
    /// read or drawn (an adapter's merged model: after the merge), and a bitsandbytes
    /// checkpoint's NF4 weights kept as stored, for the caller to attach (see [`Quantized`]).
    pub fn load_language_model_quantized(
        &self,
        device: &Device,
        hub: &HubOptions,
        seed: u64,
        dtype: WeightDtype,
        quantize: Option<&QuantizeAtLoad>,
    ) -> Result<Quantized<LanguageModel>> {
        // Burn computes garbage in a dtype a backend lacks (WGSL has no bf16): say so before loading.
        if !device.supports_dtype(dtype.burn()) {
            return Err(GptError::Model(format!("--dtype {dtype}: the device {device:?} has no {dtype} arithmetic; use --dtype f32")));
        }
        match self {
            Self::Dir(dir) => load_language_model_dir_quantized(dir, device, dtype, quantize),
            Self::Hub(repo) => load_language_model_dir_quantized(&fetch_model(repo, hub)?, device, dtype, quantize),
            Self::Random(preset) => random_model(preset, seed, device, dtype, quantize),
            Self::Adapter(dir) => {
                let merged = cast_matrices(load_merged(dir, device, hub, seed)?, dtype);
                match quantize {
                    Some(q) => Quantized::quantize(merged, &q.targets, q.scheme),
                    None => Ok(Quantized::plain(merged)),
                }
            }
        }
    }

    /// The local directory of the model's files (config, tokenizer), fetching a hub model first;
    /// `None` for `random:` presets. An adapter directory's is its base model's.
    pub fn files_dir(&self, hub: &HubOptions) -> Result<Option<PathBuf>> {
        match self {
            Self::Dir(dir) => Ok(Some(dir.clone())),
            Self::Hub(repo) => fetch_model(repo, hub).map(Some),
            Self::Random(_) => Ok(None),
            Self::Adapter(dir) => {
                let source = crate::lora::AdapterSource::open(dir)?;
                Self::parse(&source.config.base_model_name_or_path)?.files_dir(hub)
            }
        }
    }

    /// The model's tokenizer: GPT-2's BPE for GPT-2 models (even where a `tokenizer.json` sits
    /// beside them: it is the same BPE, and ours is faster), the directory's `tokenizer.json`
    /// for the others. A random Llama-family preset has none.
    pub fn tokenizer(&self, hub: &HubOptions) -> Result<Tokenizer> {
        let Some(dir) = self.files_dir(hub)? else {
            return match self {
                Self::Random(preset) if LlamaConfig::preset(preset).is_some() => Err(GptError::Tokenizer(format!(
                    "random:{preset} has random weights and no tokenizer files: pass token ids, or a model directory"
                ))),
                _ => Ok(Tokenizer::gpt2()),
            };
        };
        match family_of(&dir.join("config.json"))? {
            Family::Gpt2 => Ok(Tokenizer::gpt2()),
            Family::Llama(_) => Tokenizer::from_model_dir(&dir),
        }
    }
}

/// `random:<preset>`, its matrices drawn as `dtype` (seeded, see `Llama::init_as`) and the ones
/// `quantize` targets quantized one at a time as they are drawn.
fn random_model(preset: &str, seed: u64, device: &Device, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<LanguageModel>> {
    if let Some(config) = LlamaConfig::preset(preset) {
        let mut init = MatricesAs { source: &mut LlamaInit::new(&config, seed), dtype };
        return Ok(fill_quantized(Llama::skeleton(&config, device)?, &mut init, quantize)?.map(LanguageModel::from));
    }
    let config = gpt2_preset(preset)?;
    config.validate()?;
    let mut init = MatricesAs { source: &mut RandomInit::new(&config, seed), dtype };
    Ok(fill_quantized(Gpt::skeleton(&config, device), &mut init, quantize)?.map(LanguageModel::from))
}

/// A GPT-2 preset's config, or an error naming what the preset is.
fn gpt2_preset(preset: &str) -> Result<GptConfig> {
    GptConfig::preset(preset).ok_or_else(|| match LlamaConfig::preset(preset) {
        Some(_) => GptError::Model(format!("random:{preset} is a Llama-family model; this command runs GPT-2 models only so far")),
        None => GptError::Model(format!("unknown preset {preset}")),
    })
}

/// The tokenizer of what `--model M` names (see [`ModelSpec::tokenizer`]).
pub fn load_tokenizer(spec: &str) -> Result<Tokenizer> {
    ModelSpec::parse(spec)?.tokenizer(&HubOptions::from_env())
}

/// Copies the tokenizer files of what `--model M` names (a Llama-family model's `tokenizer.json`
/// …) into `dir`; `None` when it has no files of its own (GPT-2's BPE is compiled in, a random
/// preset has none).
pub fn copy_model_tokenizer(spec: &str, dir: &Path) -> Result<Option<Vec<&'static str>>> {
    let Some(source) = ModelSpec::parse(spec)?.files_dir(&HubOptions::from_env())? else { return Ok(None) };
    if family_of(&source.join("config.json"))? == Family::Gpt2 {
        return Ok(None);
    }
    crate::text::hf_tokenizer::copy_tokenizer_files(&source, dir).map(Some)
}

/// Loads what `--model M` names as a language model of any family.
pub fn load_language_model(spec: &str, device: &Device, seed: u64) -> Result<LanguageModel> {
    load_language_model_as(spec, device, seed, WeightDtype::F32)
}

/// [`load_language_model`] with the weight matrices kept as `dtype` (`--dtype`).
pub fn load_language_model_as(spec: &str, device: &Device, seed: u64, dtype: WeightDtype) -> Result<LanguageModel> {
    ModelSpec::parse(spec)?.load_language_model_as(device, &HubOptions::from_env(), seed, dtype)
}

/// [`load_language_model_as`] with the weights `quantize` targets quantized while loading (see
/// [`ModelSpec::load_language_model_quantized`]).
pub fn load_language_model_quantized(spec: &str, device: &Device, seed: u64, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<LanguageModel>> {
    ModelSpec::parse(spec)?.load_language_model_quantized(device, &HubOptions::from_env(), seed, dtype, quantize)
}

/// Loads what `--model M` names (see [`ModelSpec::parse`]), with the hub settings of the environment.
pub fn load_model(spec: &str, device: &Device, seed: u64) -> Result<Gpt> {
    ModelSpec::parse(spec)?.load(device, &HubOptions::from_env(), seed)
}
