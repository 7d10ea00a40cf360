//! Classifiers on disk: a `GPT2ForSequenceClassification` directory (the trunk, `score.weight`
//! `[n_classes, n_embd]` in PyTorch's layout, `score.bias`, the class names in `config.json`), or a
//! LoRA adapter with the head as PEFT's `modules_to_save` and the classes in a file beside it.

use std::path::Path;

use burn::prelude::*;

use super::adapter_dir::load_base;
use super::model_dir::{load_trunk, trunk_tensors, write_model_files};
use crate::models::LanguageModel;
use crate::error::{GptError, Result};
use crate::io::{HubOptions, SafetensorsSource, TensorSource, write_atomic};
use crate::lora::{ADAPTER_CONFIG, AdapterConfig, AdapterSource, AdapterTask, is_adapter_dir, save_adapter_dir};
use crate::models::gpt2::{EOT_TOKEN, GptClassifier, GptConfig};

/// The `config.json` key of a classifier's training length (not an HF key; HF ignores it).
const MAX_LENGTH_KEY: &str = "llmfs_max_length";

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
    extra.insert("pad_token_id".into(), serde_json::json!(EOT_TOKEN));
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
pub fn save_classifier_adapter_dir(classifier: &GptClassifier, dir: &Path, config: &AdapterConfig) -> Result<()> {
    save_adapter_dir(dir, &classifier.gpt, config, head_tensors(classifier))?;
    let info = ClassifierInfo { labels: classifier.labels().to_vec(), max_length: classifier.max_length() };
    write_atomic(&dir.join(CLASSIFIER_FILE), serde_json::to_string_pretty(&info).unwrap_or_default().as_bytes())
}

/// Whether `dir` holds a classifier: an HF directory whose config names classes, or a
/// classifier's adapter.
pub fn is_classifier_dir(dir: &Path) -> Result<bool> {
    if is_adapter_dir(dir) {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG))?;
        return Ok(config.task_type == AdapterTask::SequenceClassification);
    }
    let config = dir.join("config.json");
    // Classifier heads exist for GPT-2 only so far; any other family is a language model.
    if super::model_dir::family_of(&config)? != super::model_dir::Family::Gpt2 {
        return Ok(false);
    }
    Ok(classifier_labels(&GptConfig::load(&config)?).is_some())
}

/// Loads a classifier adapter: its base model, the adapters folded in, the head.
fn load_classifier_adapter_dir(dir: &Path, device: &Device) -> Result<GptClassifier> {
    let mut source = AdapterSource::open(dir)?;
    if source.config.task_type != AdapterTask::SequenceClassification {
        return Err(GptError::Model(format!("{}: a language model's adapter, not a classifier's", dir.display())));
    }
    let info_path = dir.join(CLASSIFIER_FILE);
    let text = std::fs::read_to_string(&info_path).map_err(|e| GptError::io(&info_path, e))?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| GptError::Json { path: info_path.clone(), source: e })?;
    let LanguageModel::Gpt2(base) = load_base(&source, device, &HubOptions::from_env(), 0)? else {
        return Err(GptError::Model(format!("{}: classifier heads exist for GPT-2 models only so far", dir.display())));
    };
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
    if is_adapter_dir(dir) {
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
