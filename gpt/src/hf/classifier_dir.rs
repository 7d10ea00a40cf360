//! Classifiers on disk: a `*ForSequenceClassification` directory as transformers writes it
//! (GPT-2's: the trunk under `transformer.*`, `score.weight` `[n_classes, n_embd]` and
//! `score.bias`; a Llama-family model's: the trunk under `model.*`, `score.weight` `[n_classes,
//! hidden]`, no LM head), the class names and `pad_token_id` in `config.json`; or a LoRA adapter
//! with the head as PEFT's `modules_to_save` and the classes in a file beside it.

use std::path::Path;

use burn::prelude::*;
use serde_json::{Map, Value, json};

use super::adapter_dir::load_base;
use super::model_dir::{Family, family_in, family_of, llama_tensors, load_trunk, trunk_tensors, write_llama_files, write_model_files};
use crate::error::{GptError, Result};
use crate::io::{HubOptions, OutInLinears, SafetensorsSource, TensorSource, fill_params_matching, write_atomic};
use crate::lora::{ADAPTER_CONFIG, AdapterConfig, AdapterSource, AdapterTask, is_adapter_dir, save_adapter_dir};
use crate::models::gpt2::GptConfig;
use crate::models::llama::{Llama, LlamaConfig};
use crate::models::{Classifier, LanguageModel};

/// The `config.json` key of a classifier's training length (not an HF key; HF ignores it).
const MAX_LENGTH_KEY: &str = "llmfs_max_length";
const CLASSIFIER_SUFFIX: &str = "ForSequenceClassification";

/// The class names of a config's keys (`labels`, else `id2label` of a `*ForSequenceClassification`),
/// `None` for a language model.
pub fn classifier_labels(config: &Map<String, Value>) -> Option<Vec<String>> {
    if let Some(labels) = config.get("labels").and_then(|v| v.as_array()) {
        return labels.iter().map(|l| l.as_str().map(str::to_string)).collect();
    }
    let id2label = config.get("id2label")?.as_object()?;
    let is_classifier = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|name| name.as_str().is_some_and(|n| n.ends_with(CLASSIFIER_SUFFIX))));
    if !is_classifier {
        return None;
    }
    let mut labels: Vec<(usize, String)> =
        id2label.iter().filter_map(|(id, name)| Some((id.parse().ok()?, name.as_str()?.to_string()))).collect();
    labels.sort();
    Some(labels.into_iter().map(|(_, name)| name).collect())
}

/// The config keys that make a model's config a classifier's.
fn classifier_keys(classifier: &Classifier, architecture: String, extra: &mut Map<String, Value>) {
    let labels = classifier.labels();
    extra.insert("architectures".into(), json!([architecture]));
    extra.insert("labels".into(), json!(labels));
    extra.insert("id2label".into(), labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect());
    extra.insert("label2id".into(), labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect());
    extra.insert("pad_token_id".into(), json!(classifier.pad_token()));
    if let Some(length) = classifier.max_length() {
        extra.insert(MAX_LENGTH_KEY.into(), json!(length));
    }
}

/// Writes a classifier: the trunk, the head (`score.weight` `[n_classes, hidden]`, PyTorch's
/// layout; GPT-2's `score.bias`), and a config `transformers` reads as the family's
/// `*ForSequenceClassification`. Tokenizer files are the caller's.
pub fn save_classifier_dir(classifier: &Classifier, dir: &Path) -> Result<()> {
    crate::quant::ensure_not_quantized(classifier, dir)?;
    match &classifier.model {
        LanguageModel::Gpt2(gpt) => {
            let mut tensors = trunk_tensors(gpt);
            tensors.extend(head_tensors(classifier));
            let mut config = gpt.config().clone();
            classifier_keys(classifier, "GPT2ForSequenceClassification".into(), &mut config.extra);
            write_model_files(dir, tensors, config)
        }
        LanguageModel::Llama(llama) => {
            // A sequence classifier has no LM head.
            let mut tensors: Vec<_> = llama_tensors(llama)?.into_iter().filter(|(name, _)| !name.starts_with("lm_head.")).collect();
            tensors.extend(head_tensors(classifier));
            let mut config = llama.config().clone();
            classifier_keys(classifier, config.architecture()?.classifier_class_name(), &mut config.extra);
            write_llama_files(dir, tensors, config)
        }
    }
}

/// A classifier's head in PyTorch's layout: `score.weight` `[n_classes, hidden]`, `score.bias` if any.
fn head_tensors(classifier: &Classifier) -> Vec<(String, TensorData)> {
    let mut tensors = vec![("score.weight".to_string(), classifier.score.weight.val().transpose().into_data().convert::<f32>())];
    if let Some(bias) = &classifier.score.bias {
        tensors.push(("score.bias".to_string(), bias.val().into_data().convert::<f32>()));
    }
    tensors
}

/// What a classifier adapter keeps besides PEFT's files: its classes, training length and padding.
const CLASSIFIER_FILE: &str = "llmfs_classifier.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct ClassifierInfo {
    labels: Vec<String>,
    max_length: Option<usize>,
    /// Absent in adapters from before other families: GPT-2's `<|endoftext|>`.
    #[serde(default = "gpt2_pad")]
    pad_token: u32,
}

fn gpt2_pad() -> u32 {
    crate::models::gpt2::EOT_TOKEN
}

/// Writes a LoRA'd classifier as an adapter directory: the trunk's adapters and the head
/// (PEFT's `modules_to_save`), with the classes in `llmfs_classifier.json`.
pub fn save_classifier_adapter_dir(classifier: &Classifier, dir: &Path, config: &AdapterConfig) -> Result<()> {
    save_adapter_dir(dir, &classifier.model, config, head_tensors(classifier))?;
    let info = ClassifierInfo { labels: classifier.labels().to_vec(), max_length: classifier.max_length(), pad_token: classifier.pad_token() };
    write_atomic(&dir.join(CLASSIFIER_FILE), serde_json::to_string_pretty(&info).unwrap_or_default().as_bytes())
}

/// Whether `dir` holds a classifier: an HF directory whose config names classes, or a
/// classifier's adapter.
pub fn is_classifier_dir(dir: &Path) -> Result<bool> {
    if is_adapter_dir(dir) {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG))?;
        return Ok(config.task_type == AdapterTask::SequenceClassification);
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GptError::io(&path, e))?;
    let config: Map<String, Value> = serde_json::from_str(&text).map_err(|e| GptError::Json { path: path.clone(), source: e })?;
    family_in(&config, &path)?;
    Ok(classifier_labels(&config).is_some())
}

/// The head read from `source` (PyTorch's layout) onto `model`.
fn with_head(model: LanguageModel, labels: Vec<String>, pad_token: u32, source: &mut dyn FnMut(&str, &[usize]) -> Result<TensorData>) -> Result<Classifier> {
    let device = crate::models::CausalLm::device(&model);
    let (n, c) = (labels.len(), model.hidden_size());
    let weight = Tensor::from_data(source("score.weight", &[n, c])?, &device);
    let bias = match model {
        LanguageModel::Gpt2(_) => Some(Tensor::from_data(source("score.bias", &[n])?, &device)),
        LanguageModel::Llama(_) => None,
    };
    Classifier::with_head(model, labels, pad_token, weight, bias)
}

/// Loads a classifier adapter: its base model, the adapters folded in, the head.
fn load_classifier_adapter_dir(dir: &Path, device: &Device) -> Result<Classifier> {
    let mut source = AdapterSource::open(dir)?;
    if source.config.task_type != AdapterTask::SequenceClassification {
        return Err(GptError::Model(format!("{}: a language model's adapter, not a classifier's", dir.display())));
    }
    let info_path = dir.join(CLASSIFIER_FILE);
    let text = std::fs::read_to_string(&info_path).map_err(|e| GptError::io(&info_path, e))?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| GptError::Json { path: info_path.clone(), source: e })?;
    let base = load_base(&source, device, &HubOptions::from_env(), 0)?;
    let model = source.attach(base)?.materialize();
    let mut classifier = with_head(model, info.labels, info.pad_token, &mut |name, shape| source.extra_tensor(name, shape))?;
    source.finish()?;
    if let Some(length) = info.max_length {
        classifier.set_max_length(length);
    }
    Ok(classifier)
}

/// What a classifier's config says besides the trunk: its classes (`None`: not a classifier), its
/// `pad_token_id` and its training length.
fn head_settings(config: &Map<String, Value>) -> Option<(Vec<String>, Option<u32>, Option<u64>)> {
    let labels = classifier_labels(config)?;
    let pad = config.get("pad_token_id").and_then(Value::as_u64).map(|p| p as u32);
    Some((labels, pad, config.get(MAX_LENGTH_KEY).and_then(Value::as_u64)))
}

/// Loads a classifier written by [`save_classifier_dir`] (or transformers' `save_pretrained` of a
/// `*ForSequenceClassification` of a supported family) or [`save_classifier_adapter_dir`].
pub fn load_classifier_dir(dir: &Path, device: &Device) -> Result<Classifier> {
    if is_adapter_dir(dir) {
        return load_classifier_adapter_dir(dir, device);
    }
    let path = dir.join("config.json");
    let not_a_classifier = || GptError::Model(format!("{}: config.json names no classes (`labels`, `id2label`): not a classifier", dir.display()));
    let mut source = SafetensorsSource::open_dir(dir)?;
    let (model, labels, pad_token, max_length) = match family_of(&path)? {
        Family::Gpt2 => {
            let config = GptConfig::load(&path)?;
            let (labels, pad, max_length) = head_settings(&config.extra).ok_or_else(not_a_classifier)?;
            (LanguageModel::Gpt2(load_trunk(dir, &config, &mut source, device)?), labels, pad.unwrap_or(gpt2_pad()), max_length)
        }
        Family::Llama(_) => {
            let config = LlamaConfig::load(&path)?;
            let (labels, pad, max_length) = head_settings(&config.extra).ok_or_else(not_a_classifier)?;
            let pad = pad.or_else(|| config.eos_token_ids().first().copied()).ok_or_else(|| {
                GptError::Model(format!("{}: a classifier needs pad_token_id (or eos_token_id) to find each text's last token", path.display()))
            })?;
            let skeleton = Llama::skeleton(&config, device)?.without_lm_head();
            let mut linears = OutInLinears { source: &mut source, is_linear: Llama::is_out_in_linear };
            let llama = fill_params_matching(skeleton, &mut linears, |_| true)?;
            (LanguageModel::Llama(llama), labels, pad, max_length)
        }
    };
    let mut classifier = with_head(model, labels, pad_token, &mut |name, shape| source.tensor(name, shape))?;
    source.finish()?;
    if let Some(length) = max_length {
        classifier.set_max_length(length as usize);
    }
    Ok(classifier)
}
