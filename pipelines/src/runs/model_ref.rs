//! What `--model` names once run directories are taken into account: the one place that knows
//! where a run keeps its model (`model/`, or `adapter/` for a LoRA run saved without `--merge`)
//! and what it was trained for (`run.json`). Everything else `--model` takes (model, classifier
//! and adapter directories, hub ids, `random:<preset>`) is [`gpt::hf::ModelSpec`]'s.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gpt::io::WeightDtype;
use gpt::models::LanguageModel;
use gpt::quant::{QuantizeAtLoad, Quantized};
use gpt::{Classifier, Gpt, Tokenizer};
use gpt::burn::prelude::Device;

use super::{ADAPTER_DIR, MODEL_DIR, RUN_JSON};

/// `--model` with a run directory resolved to the model inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRef {
    /// What to load: a run's `model/` or `adapter/`, or `--model` as given.
    pub model: String,
    /// The run directory, when `--model` names one or its `model/` or `adapter/`.
    pub run: Option<PathBuf>,
}

impl ModelRef {
    /// A run directory becomes its `model/` (the merged model first) or its `adapter/`; a
    /// directory that holds a model or an adapter itself stays as it is, as does anything else.
    pub fn resolve(text: &str) -> Self {
        let path = Path::new(text);
        if !path.is_dir() {
            return Self { model: text.to_string(), run: None };
        }
        // A run's own model/ or adapter/, named directly.
        let in_run = path.file_name().is_some_and(|name| name == MODEL_DIR || name == ADAPTER_DIR);
        if let Some(run) = path.parent().filter(|parent| in_run && parent.join(RUN_JSON).is_file()) {
            return Self { model: text.to_string(), run: Some(run.to_path_buf()) };
        }
        if holds_model(path) || gpt::lora::is_adapter_dir(path) {
            return Self { model: text.to_string(), run: None };
        }
        let run = Some(path.to_path_buf());
        let model = path.join(MODEL_DIR);
        if holds_model(&model) {
            return Self { model: model.to_string_lossy().into_owned(), run };
        }
        let adapter = path.join(ADAPTER_DIR);
        if gpt::lora::is_adapter_dir(&adapter) {
            return Self { model: adapter.to_string_lossy().into_owned(), run };
        }
        Self { model: text.to_string(), run: path.join(RUN_JSON).is_file().then(|| path.to_path_buf()) }
    }

    /// The task the run was trained for (`run.json`'s `config.task`, e.g. `instruction`), if
    /// `--model` names a run.
    pub fn task(&self) -> Result<Option<String>> {
        let Some(run) = self.run_json()? else { return Ok(None) };
        // `RunDir::write_run_json` keeps the job under "config".
        let task = run.pointer("/config/task").or_else(|| run.get("task")).and_then(|t| t.as_str());
        Ok(task.map(str::to_string))
    }

    /// The prompt format an instruction run was trained on (`config.details.prompt_format`:
    /// `alpaca` or `chat`), if `--model` names such a run.
    pub fn prompt_format(&self) -> Result<Option<String>> {
        let Some(run) = self.run_json()? else { return Ok(None) };
        Ok(run.pointer("/config/details/prompt_format").and_then(|t| t.as_str()).map(str::to_string))
    }

    fn run_json(&self) -> Result<Option<serde_json::Value>> {
        let Some(run) = &self.run else { return Ok(None) };
        let run = super::RunDir::joined(run);
        if !run.run_json().is_file() {
            return Ok(None);
        }
        run.read_run_json().map(Some)
    }

    /// Whether the model is a classifier (an HF classifier directory or a classifier's adapter).
    pub fn is_classifier(&self) -> Result<bool> {
        let spec = self.spec()?;
        let dir = Path::new(&spec);
        Ok(dir.is_dir() && gpt::hf::is_classifier_dir(dir)?)
    }

    /// Loads the language model (see [`gpt::hf::ModelSpec`] for everything but runs).
    pub fn load(&self, device: &Device, seed: u64) -> Result<Gpt> {
        Ok(gpt::hf::load_model(&self.spec()?, device, seed)?)
    }

    /// Loads the model as a language model of any family (GPT-2, Llama, Qwen ...).
    pub fn load_language_model(&self, device: &Device, seed: u64) -> Result<LanguageModel> {
        self.load_language_model_as(device, seed, WeightDtype::F32)
    }

    /// [`Self::load_language_model`] with the weight matrices kept as `dtype` (`--dtype`).
    pub fn load_language_model_as(&self, device: &Device, seed: u64, dtype: WeightDtype) -> Result<LanguageModel> {
        Ok(gpt::hf::load_language_model_as(&self.spec()?, device, seed, dtype)?)
    }

    /// [`Self::load_language_model_as`] with the weights `quantize` targets quantized while
    /// loading, for the caller to attach (see [`gpt::quant::Quantized`]).
    pub fn load_language_model_quantized(&self, device: &Device, seed: u64, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<LanguageModel>> {
        Ok(gpt::hf::load_language_model_quantized(&self.spec()?, device, seed, dtype, quantize)?)
    }

    /// The model's tokenizer (GPT-2's BPE, or the directory's `tokenizer.json`).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Ok(gpt::hf::load_tokenizer(&self.spec()?)?)
    }

    /// The tokenizer `text` names: `gpt2` is GPT-2's BPE (compiled in: nothing to fetch), else
    /// the tokenizer of the model `text` names, as [`Self::tokenizer`].
    pub fn tokenizer_named(text: &str) -> Result<Tokenizer> {
        if text == "gpt2" {
            return Ok(Tokenizer::gpt2());
        }
        Self::resolve(text).tokenizer()
    }

    /// Loads the classifier: a run's `model/` (or `adapter/`), a classifier directory or a
    /// classifier's adapter.
    pub fn load_classifier(&self, device: &Device) -> Result<Classifier> {
        let dir = PathBuf::from(self.spec()?);
        gpt::hf::load_classifier_dir(&dir, device).with_context(|| format!("loading the classifier in {}", dir.display()))
    }

    /// `self.model` for [`gpt::hf::ModelSpec`], or an error for a run directory that holds no
    /// model (yet).
    pub fn spec(&self) -> Result<String> {
        if let Some(run) = self.run.as_deref().filter(|run| Path::new(&self.model) == *run) {
            anyhow::bail!(
                "{}: a run directory without a model ({MODEL_DIR}/config.json) or adapters ({ADAPTER_DIR}/{}): \
                 has its training finished?",
                run.display(),
                gpt::lora::ADAPTER_CONFIG
            );
        }
        Ok(self.model.clone())
    }
}

fn holds_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

/// Loads the classifier `--model` names (see [`ModelRef::load_classifier`]) and the tokenizer
/// it reads texts with.
pub fn load_classifier(model: &Path, device: &Device) -> Result<(Classifier, Tokenizer)> {
    let model = ModelRef::resolve(&model.to_string_lossy());
    Ok((model.load_classifier(device)?, model.tokenizer()?))
}

/// Loads what `--model` names, a run directory included.
pub fn load_model(text: &str, device: &Device, seed: u64) -> Result<Gpt> {
    ModelRef::resolve(text).load(device, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_resolve_to_their_model_then_their_adapter() {
        let run = tempfile::tempdir().unwrap();
        let root = run.path();
        std::fs::write(root.join(RUN_JSON), r#"{"config": {"task": "instruction"}}"#).unwrap();
        let text = root.to_str().unwrap();

        // A run with neither: itself, but still a run (its task is known).
        let bare = ModelRef::resolve(text);
        assert_eq!((bare.model.as_str(), bare.run.as_deref()), (text, Some(root)));
        assert_eq!(bare.task().unwrap().as_deref(), Some("instruction"));

        std::fs::create_dir(root.join(ADAPTER_DIR)).unwrap();
        std::fs::write(root.join(ADAPTER_DIR).join(gpt::lora::ADAPTER_CONFIG), "{}").unwrap();
        assert_eq!(ModelRef::resolve(text).model, root.join(ADAPTER_DIR).to_string_lossy());

        std::fs::create_dir(root.join(MODEL_DIR)).unwrap();
        std::fs::write(root.join(MODEL_DIR).join("config.json"), "{}").unwrap();
        let merged = ModelRef::resolve(text);
        assert_eq!(merged.model, root.join(MODEL_DIR).to_string_lossy());
        assert_eq!(merged.run.as_deref(), Some(root));

        // A run's model/ named directly still knows its run.
        let inner = ModelRef::resolve(root.join(MODEL_DIR).to_str().unwrap());
        assert_eq!(inner.run.as_deref(), Some(root));
        assert_eq!(inner.task().unwrap().as_deref(), Some("instruction"));
    }

    #[test]
    fn anything_else_is_left_to_the_model_crate() {
        for text in ["gpt2", "random:tiny", "/no/such/dir"] {
            assert_eq!(ModelRef::resolve(text), ModelRef { model: text.to_string(), run: None });
        }
        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("config.json"), "{}").unwrap();
        let text = plain.path().to_str().unwrap();
        assert_eq!(ModelRef::resolve(text), ModelRef { model: text.to_string(), run: None });
    }
}
