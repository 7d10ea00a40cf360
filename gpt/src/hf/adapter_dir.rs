//! LoRA adapter directories as models: the base model that `adapter_config.json` names, loaded
//! the way `--model` would load it, with the adapters attached or folded in.

use std::path::Path;

use burn::prelude::*;

use super::ModelSpec;
use crate::error::{GptError, Result};
use crate::io::HubOptions;
use crate::lora::{ADAPTER_CONFIG, AdapterSource, AdapterTask};
use crate::models::LanguageModel;

/// The base model an adapter directory names, with its adapters folded in: a plain model that
/// generates, evaluates and exports like any other.
pub fn load_merged(dir: &Path, device: &Device, hub: &HubOptions, seed: u64) -> Result<LanguageModel> {
    let mut source = AdapterSource::open(dir)?;
    if source.config.task_type != AdapterTask::CausalLm {
        return Err(GptError::Model(format!(
            "{} holds a classifier's adapter ({:?}), not a language model's: use `llmfs classify`",
            dir.display(),
            source.config.task_type
        )));
    }
    let base = load_base(&source, device, hub, seed)?;
    let model = source.attach(base)?;
    source.finish()?;
    Ok(model.materialize())
}

/// The base model an adapter was trained on.
pub fn load_base(source: &AdapterSource, device: &Device, hub: &HubOptions, seed: u64) -> Result<LanguageModel> {
    let base = &source.config.base_model_name_or_path;
    let spec = ModelSpec::parse(base).map_err(|e| {
        GptError::Model(format!("{}: the base model {base:?} of this adapter: {e}", source.dir.join(ADAPTER_CONFIG).display()))
    })?;
    if matches!(spec, ModelSpec::Adapter(_)) {
        return Err(GptError::Model(format!("{}: the base model {base:?} is itself an adapter", source.dir.display())));
    }
    let base = spec.load_language_model(device, hub, seed)?;
    source.config.check_base(&base).map_err(|e| GptError::Model(format!("{}: {e}", source.dir.join(ADAPTER_CONFIG).display())))?;
    Ok(base)
}
