//! Model directories in the Hugging Face layout (`config.json` + `model.safetensors`), the hub,
//! and what `--model M` means.

pub mod hub;
pub mod params;
pub mod safetensors_io;

use std::path::{Path, PathBuf};

use burn::prelude::*;

pub use hub::{HubOptions, fetch_model};
pub use params::{RandomInit, TensorSource, fill_params, fill_params_matching, hf_name, named_params, parameter_counts, seeded_normal};
pub use safetensors_io::{SafetensorsSource, write_safetensors};

use crate::config::GptConfig;
use crate::error::{GptError, Result};
use crate::fsutil::write_atomic;
use crate::classifier::GptClassifier;
use crate::model::Gpt;

/// The `config.json` key of a classifier's training length (not an HF key; HF ignores it).
const MAX_LENGTH_KEY: &str = "llmfs_max_length";

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
fn load_trunk(dir: &Path, config: &GptConfig, source: &mut SafetensorsSource, device: &Device) -> Result<Gpt> {
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
fn trunk_tensors(model: &Gpt) -> Vec<(String, TensorData)> {
    named_params(model).into_iter().map(|(name, data)| (format!("{SAVE_PREFIX}{name}"), data)).collect()
}

fn write_model_files(dir: &Path, tensors: Vec<(String, TensorData)>, config: GptConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(safetensors_io::SINGLE_FILE), &tensors)?;
    config.save(&dir.join("config.json"))?;
    let generation = serde_json::json!({ "bos_token_id": crate::EOT_TOKEN, "eos_token_id": crate::EOT_TOKEN });
    write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&generation).unwrap_or_default().as_bytes())
}

/// The class names of a classifier's config (`labels`, else `id2label`), `None` for a language model.
pub fn classifier_labels(config: &GptConfig) -> Option<Vec<String>> {
    if let Some(labels) = config.extra.get("labels").and_then(|v| v.as_array()) {
        return labels.iter().map(|l| l.as_str().map(str::to_string)).collect();
    }
    let id2label = config.extra.get("id2label")?.as_object()?;
    let is_classifier = config.extra.get("architectures").and_then(|a| a.as_array()).is_some_and(|a| {
        a.iter().any(|name| name.as_str() == Some("GPT2ForSequenceClassification"))
    });
    if !is_classifier {
        return None;
    }
    let mut labels: Vec<(usize, String)> =
        id2label.iter().filter_map(|(id, name)| Some((id.parse().ok()?, name.as_str()?.to_string()))).collect();
    labels.sort();
    Some(labels.into_iter().map(|(_, name)| name).collect())
}

/// Writes a classifier: the trunk, `score.weight` `[n_classes, n_embd]` (PyTorch's layout),
/// `score.bias`, and a config `transformers` reads as a `GPT2ForSequenceClassification`.
pub fn save_classifier_dir(classifier: &GptClassifier, dir: &Path) -> Result<()> {
    let mut tensors = trunk_tensors(&classifier.gpt);
    tensors.extend(head_tensors(classifier));
    let labels = classifier.labels();
    let mut config = classifier.config().clone();
    let extra = &mut config.extra;
    extra.insert("architectures".into(), serde_json::json!(["GPT2ForSequenceClassification"]));
    extra.insert("labels".into(), serde_json::json!(labels));
    extra.insert("id2label".into(), labels.iter().enumerate().map(|(i, l)| (i.to_string(), serde_json::json!(l))).collect());
    extra.insert("label2id".into(), labels.iter().enumerate().map(|(i, l)| (l.clone(), serde_json::json!(i))).collect());
    extra.insert("pad_token_id".into(), serde_json::json!(crate::EOT_TOKEN));
    if let Some(length) = classifier.max_length() {
        extra.insert(MAX_LENGTH_KEY.into(), serde_json::json!(length));
    }
    write_model_files(dir, tensors, config)
}

/// A classifier's head in PyTorch's layout: `score.weight` `[n_classes, n_embd]`, `score.bias`.
fn head_tensors(classifier: &GptClassifier) -> Vec<(String, TensorData)> {
    let mut tensors = vec![("score.weight".to_string(), classifier.score.weight.val().transpose().into_data().convert::<f32>())];
    if let Some(bias) = &classifier.score.bias {
        tensors.push(("score.bias".to_string(), bias.val().into_data().convert::<f32>()));
    }
    tensors
}

/// What a classifier adapter keeps besides PEFT's files: its classes and training length.
const CLASSIFIER_FILE: &str = "llmfs_classifier.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct ClassifierInfo {
    labels: Vec<String>,
    max_length: Option<usize>,
}

/// Writes a LoRA'd classifier as an adapter directory: the trunk's adapters and the head
/// (PEFT's `modules_to_save`), with the classes in `llmfs_classifier.json`.
pub fn save_classifier_adapter_dir(classifier: &GptClassifier, dir: &Path, config: &crate::lora::AdapterConfig) -> Result<()> {
    crate::lora::save_adapter_dir(dir, &classifier.gpt, config, head_tensors(classifier))?;
    let info = ClassifierInfo { labels: classifier.labels().to_vec(), max_length: classifier.max_length() };
    write_atomic(&dir.join(CLASSIFIER_FILE), serde_json::to_string_pretty(&info).unwrap_or_default().as_bytes())
}

/// Whether `dir` holds a classifier: an HF directory whose config names classes, or a
/// classifier's adapter.
pub fn is_classifier_dir(dir: &Path) -> Result<bool> {
    if crate::lora::is_adapter_dir(dir) {
        let config = crate::lora::AdapterConfig::load(&dir.join(crate::lora::ADAPTER_CONFIG))?;
        return Ok(config.task_type == crate::lora::AdapterTask::SequenceClassification);
    }
    Ok(classifier_labels(&GptConfig::load(&dir.join("config.json"))?).is_some())
}

/// Loads a classifier adapter: its base model, the adapters folded in, the head.
fn load_classifier_adapter_dir(dir: &Path, device: &Device) -> Result<GptClassifier> {
    let mut source = crate::lora::AdapterSource::open(dir)?;
    if source.config.task_type != crate::lora::AdapterTask::SequenceClassification {
        return Err(GptError::Model(format!("{}: a language model's adapter, not a classifier's", dir.display())));
    }
    let info_path = dir.join(CLASSIFIER_FILE);
    let text = std::fs::read_to_string(&info_path).map_err(|e| GptError::io(&info_path, e))?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| GptError::Json { path: info_path.clone(), source: e })?;
    let base = crate::lora::load_base(&source, device, &HubOptions::from_env(), 0)?;
    let gpt = source.attach(base)?.materialize();
    let (n, c) = (info.labels.len(), gpt.config().n_embd);
    let weight = source.extra_tensor("score.weight", &[n, c])?;
    let bias = source.extra_tensor("score.bias", &[n])?;
    source.finish()?;
    let mut classifier = GptClassifier::with_head(gpt, info.labels, Tensor::from_data(weight, device), Tensor::from_data(bias, device))?;
    if let Some(length) = info.max_length {
        classifier.set_max_length(length);
    }
    Ok(classifier)
}

/// Loads a classifier written by [`save_classifier_dir`] or [`save_classifier_adapter_dir`].
pub fn load_classifier_dir(dir: &Path, device: &Device) -> Result<GptClassifier> {
    if crate::lora::is_adapter_dir(dir) {
        return load_classifier_adapter_dir(dir, device);
    }
    let config = GptConfig::load(&dir.join("config.json"))?;
    let labels = classifier_labels(&config).ok_or_else(|| {
        GptError::Model(format!("{}: config.json names no classes (`labels`): not a classifier", dir.display()))
    })?;
    let mut source = SafetensorsSource::open_dir(dir)?;
    let gpt = load_trunk(dir, &config, &mut source, device)?;
    let (n, c) = (labels.len(), config.n_embd);
    let weight = source.tensor("score.weight", &[n, c])?;
    let bias = source.tensor("score.bias", &[n])?;
    source.finish()?;
    let max_length = config.extra.get(MAX_LENGTH_KEY).and_then(|v| v.as_u64());
    let mut classifier = GptClassifier::with_head(gpt, labels, Tensor::from_data(weight, device), Tensor::from_data(bias, device))?;
    if let Some(length) = max_length {
        classifier.set_max_length(length as usize);
    }
    Ok(classifier)
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
    /// A LoRA adapter directory (`adapter_config.json` naming its base model), loaded merged.
    Adapter(PathBuf),
}

impl ModelSpec {
    /// Interprets `--model`: an existing directory (an HF model directory, a LoRA adapter
    /// directory, or a run directory holding one of them under `model/` or `adapter/`; the merged
    /// `model/` first), `random:<preset>`, or else a hub repo id.
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
            if crate::lora::is_adapter_dir(path) {
                return Ok(Self::Adapter(path.to_path_buf()));
            }
            let run_model = path.join("model");
            if run_model.join("config.json").is_file() {
                return Ok(Self::Dir(run_model));
            }
            let run_adapter = path.join("adapter");
            if crate::lora::is_adapter_dir(&run_adapter) {
                return Ok(Self::Adapter(run_adapter));
            }
            return Err(GptError::Model(format!(
                "{}: neither a model directory (config.json + {}), an adapter directory ({}) nor a run \
                 directory (model/config.json or adapter/{})",
                path.display(),
                safetensors_io::SINGLE_FILE,
                crate::lora::ADAPTER_CONFIG,
                crate::lora::ADAPTER_CONFIG
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
            Self::Adapter(dir) => crate::lora::load_merged(dir, device, hub, seed),
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
