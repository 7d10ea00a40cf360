//! Model directories in the Hugging Face layout: `config.json` + `model.safetensors` (+
//! `generation_config.json`), as `transformers`' `save_pretrained` writes them.

use std::path::Path;

use burn::prelude::*;

use super::classifier_dir::classifier_labels;
use crate::error::{GptError, Result};
use crate::io::{OutInLinears, SafetensorsSource, WeightDtype, fill_params, named_params, write_atomic, write_safetensors};
use crate::models::LanguageModel;
use crate::quant::bnb_checkpoint::{Bnb4bitLinears, BnbCheckpoint};
use crate::quant::{QuantizeAtLoad, Quantization, Quantized, fill_quantized};
use crate::models::gpt2::{EOT_TOKEN, Gpt, GptConfig};
use crate::models::llama::config::{Architecture, unsupported};
use crate::models::llama::{Llama, LlamaConfig};

/// `transformers`' `save_pretrained` writes the trunk of a `GPT2LMHeadModel` under this prefix.
const SAVE_PREFIX: &str = "transformer.";

/// The model family a `config.json` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama(Architecture),
}

/// Reads `config.json`'s `architectures` (first entry) or `model_type`; a config with neither (GPT-2
/// configs from before they existed) is GPT-2. Anything else is an error naming the architecture
/// and the supported ones.
pub fn family_of(config_path: &Path) -> Result<Family> {
    let text = std::fs::read_to_string(config_path).map_err(|e| GptError::io(config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| GptError::Json { path: config_path.to_path_buf(), source: e })?;
    match json.as_object() {
        Some(keys) => family_in(keys, config_path),
        None => Ok(Family::Gpt2), // names no architecture: the GPT-2 default (its loader reports the rest)
    }
}

/// [`family_of`] for the keys of a `config.json` already read (`config_path` names it in errors).
pub(super) fn family_in(json: &serde_json::Map<String, serde_json::Value>, config_path: &Path) -> Result<Family> {
    let architectures = json.get("architectures").and_then(|a| a.as_array()).and_then(|a| a.first()).and_then(|a| a.as_str());
    let model_type = json.get("model_type").and_then(|t| t.as_str());
    let gpt2 = match architectures {
        Some(name) => name.starts_with("GPT2"),
        None => model_type.is_none_or(|t| t == "gpt2"),
    };
    if gpt2 {
        return Ok(Family::Gpt2);
    }
    Architecture::from_names(architectures, model_type)
        .map(Family::Llama)
        .ok_or_else(|| GptError::Config(format!("{}: {}", config_path.display(), unsupported(architectures, model_type))))
}

/// Loads a model directory of any supported family (see [`family_of`]).
pub fn load_language_model_dir(dir: &Path, device: &Device) -> Result<LanguageModel> {
    load_language_model_dir_as(dir, device, WeightDtype::F32)
}

/// [`load_language_model_dir`] with the weight matrices kept as `dtype` (`--dtype`).
pub fn load_language_model_dir_as(dir: &Path, device: &Device, dtype: WeightDtype) -> Result<LanguageModel> {
    load_language_model_dir_quantized(dir, device, dtype, None)?.attach()
}

/// [`load_language_model_dir_as`] with the weights `quantize` targets quantized as they are read
/// (one f32 matrix held at a time, never the f32 model), and a bitsandbytes checkpoint's NF4
/// weights kept as stored: the caller attaches them, for inference or under QLoRA's adapters.
pub fn load_language_model_dir_quantized(dir: &Path, device: &Device, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<LanguageModel>> {
    Ok(match family_of(&dir.join("config.json"))? {
        Family::Gpt2 => load_model_dir_quantized(dir, device, dtype, quantize)?.map(LanguageModel::from),
        Family::Llama(_) => load_llama_dir_quantized(dir, device, dtype, quantize)?.map(LanguageModel::from),
    })
}

/// Loads a Llama-family directory: `config.json` and the weights (single or sharded; f32, f16 or
/// bf16, widened to f32), HF's `[out, in]` Linear weights turned into Burn's `[in, out]`.
pub fn load_llama_dir(dir: &Path, device: &Device) -> Result<Llama> {
    load_llama_dir_quantized(dir, device, WeightDtype::F32, None)?.attach()
}

fn load_llama_dir_quantized(dir: &Path, device: &Device, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<Llama>> {
    let config = LlamaConfig::load(&dir.join("config.json"))?;
    if classifier_labels(&config.extra).is_some() {
        return Err(GptError::Model(format!("{} holds a classifier, not a language model: use `llmfs classify`", dir.display())));
    }
    let mut source = SafetensorsSource::open_dir(dir)?.with_matrices(dtype);
    let skeleton = Llama::skeleton(&config, device)?;
    let model = match BnbCheckpoint::of(&config.extra, &dir.join("config.json"))? {
        BnbCheckpoint::None => {
            let mut linears = OutInLinears { source: &mut source, is_linear: Llama::is_out_in_linear };
            fill_quantized(skeleton, &mut linears, quantize).map_err(|e| config_mismatch(dir, e))?
        }
        // Its NF4 weights stay NF4 (as bitsandbytes stored them); the rest loads as `dtype`.
        BnbCheckpoint::Nf4 => {
            if let Some(QuantizeAtLoad { scheme: Quantization::Int8, .. }) = quantize {
                return Err(GptError::Model(format!("{}: the weights are stored 4-bit (NF4, bitsandbytes): --quantize int8 cannot apply", dir.display())));
            }
            let mut linears = Bnb4bitLinears { source: &mut source, is_linear: Llama::is_out_in_linear, matrices: Default::default() };
            let model = fill_params(skeleton, &mut linears).map_err(|e| config_mismatch(dir, e))?;
            Quantized::from_named(model, linears.matrices)?
        }
    };
    source.finish_tied_to("model.embed_tokens.weight")?;
    Ok(model)
}

/// Writes a Llama-family model as an HF-format directory (`config.json`, `model.safetensors` in
/// f32 with HF's `[out, in]` Linear weights, `generation_config.json`) that `transformers` loads
/// with the same logits. Each file is written atomically, the weights first. Tokenizer files are
/// the caller's (see `gpt::text::hf_tokenizer::copy_tokenizer_files`).
pub fn save_llama_dir(model: &Llama, dir: &Path) -> Result<()> {
    crate::quant::ensure_not_quantized(model, dir)?;
    write_llama_files(dir, llama_tensors(model)?, model.config().clone())
}

/// A Llama-family model's tensors under transformers' names, `Linear` weights `[out, in]`.
pub(super) fn llama_tensors(model: &Llama) -> Result<Vec<(String, TensorData)>> {
    named_params(model)
        .into_iter()
        .map(|(name, data)| {
            let shape = data.shape().to_vec();
            match (Llama::is_out_in_linear(&name), shape.as_slice()) {
                (true, &[d_in, d_out]) => {
                    let values = data.try_into_vec::<f32>().map_err(|e| GptError::Tensor(format!("tensor `{name}`: {e:?}")))?;
                    Ok((name, TensorData::new(crate::io::params::transpose(&values, d_in, d_out), [d_out, d_in])))
                }
                _ => Ok((name, data)),
            }
        })
        .collect()
}

/// Writes `tensors` (f32) and `config` as a Llama-family directory, the weights first.
pub(super) fn write_llama_files(dir: &Path, tensors: Vec<(String, TensorData)>, mut config: LlamaConfig) -> Result<()> {
    // The weights written are plain f32 (a bitsandbytes checkpoint's materialized): its
    // quantization_config would make transformers expect packed 4-bit tensors.
    config.extra.remove("quantization_config");
    std::fs::create_dir_all(dir).map_err(|e| GptError::io(dir, e))?;
    write_safetensors(&dir.join(crate::io::safetensors::SINGLE_FILE), &tensors)?;
    // The weights are written in f32: a config saying bf16 would make transformers load them
    // narrowed (dtype="auto"), with other logits.
    let dtype_keys: Vec<String> = ["dtype", "torch_dtype"].into_iter().filter(|k| config.extra.contains_key(*k)).map(str::to_string).collect();
    for key in if dtype_keys.is_empty() { vec!["torch_dtype".to_string()] } else { dtype_keys } {
        config.extra.insert(key, "float32".into());
    }
    config.save(&dir.join("config.json"))?;
    let mut generation = serde_json::Map::new();
    if let Some(bos) = config.bos_token_id() {
        generation.insert("bos_token_id".into(), bos.into());
    }
    match config.eos_token_ids().as_slice() {
        [] => {}
        [one] => {
            generation.insert("eos_token_id".into(), (*one).into());
        }
        many => {
            generation.insert("eos_token_id".into(), many.into());
        }
    }
    let text = serde_json::to_string_pretty(&generation).unwrap_or_default();
    write_atomic(&dir.join("generation_config.json"), text.as_bytes())
}

/// Writes a model of any family (see [`save_model_dir`], [`save_llama_dir`]).
pub fn save_language_model_dir(model: &LanguageModel, dir: &Path) -> Result<()> {
    match model {
        LanguageModel::Gpt2(model) => save_model_dir(model, dir),
        LanguageModel::Llama(model) => save_llama_dir(model, dir),
    }
}

/// A shape mismatch reported against `config.json`.
fn config_mismatch(dir: &Path, error: GptError) -> GptError {
    match error {
        GptError::ShapeMismatch { path, name, expected, found } => GptError::Model(format!(
            "{}: tensor `{name}` has shape {found:?}, but {} expects {expected:?} (does config.json describe these weights?)",
            path.display(),
            dir.join("config.json").display()
        )),
        other => other,
    }
}

/// Loads `dir/config.json` and the weights next to it. A missing, extra or wrong-shaped tensor
/// is an error naming the tensor (and both shapes).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<Gpt> {
    load_model_dir_quantized(dir, device, WeightDtype::F32, None)?.attach()
}

fn load_model_dir_quantized(dir: &Path, device: &Device, dtype: WeightDtype, quantize: Option<&QuantizeAtLoad>) -> Result<Quantized<Gpt>> {
    if let Family::Llama(architecture) = family_of(&dir.join("config.json"))? {
        return Err(GptError::Model(format!(
            "{} holds a {} (Llama family); this command runs GPT-2 models only so far",
            dir.display(),
            architecture.class_name()
        )));
    }
    let config = GptConfig::load(&dir.join("config.json"))?;
    if classifier_labels(&config.extra).is_some() {
        return Err(GptError::Model(format!(
            "{} holds a classifier (GPT2ForSequenceClassification), not a language model: use `llmfs classify`",
            dir.display()
        )));
    }
    let mut source = SafetensorsSource::open_dir(dir)?.with_matrices(dtype);
    let model = fill_quantized(Gpt::skeleton(&config, device), &mut source, quantize).map_err(|e| config_mismatch(dir, e))?;
    source.finish()?;
    Ok(model)
}

/// The GPT-2 trunk of a checkpoint, with a shape mismatch reported against `config.json`.
pub(super) fn load_trunk(dir: &Path, config: &GptConfig, source: &mut SafetensorsSource, device: &Device) -> Result<Gpt> {
    fill_params(Gpt::skeleton(config, device), source).map_err(|e| config_mismatch(dir, e))
}

/// Writes `model` as an HF-format directory (`config.json`, `model.safetensors`,
/// `generation_config.json`) that `transformers` loads. Each file is written atomically, the
/// weights first, so an interrupted save never leaves a config next to half the weights.
pub fn save_model_dir(model: &Gpt, dir: &Path) -> Result<()> {
    crate::quant::ensure_not_quantized(model, dir)?;
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
