//! A model's responses to instruction records (the test split), as in *Build a Large Language
//! Model From Scratch*, chapter 7: each record's prompt ([`format_input`]) is completed (greedy by
//! default, up to 256 new tokens, stopping at end-of-text), and the response is the new text with
//! the `### Response:` header removed. Prompts go through the model in batches with the KV cache;
//! left padding makes every row generate exactly what its prompt would alone.
//!
//! The output file is the records plus `model_response`, what [`crate::eval::judge`] scores.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::models::CausalLm;
use gpt::generate::{Completion, GenerateConfig, generate};
use serde::{Deserialize, Serialize};

use crate::data::instruction::{
    self, InstructionRecord, SPLIT_FILES, format_input, parse_json_list, record_object, required_field, string_field,
    to_pretty_json,
};
use crate::download;

/// The header the model writes before its response (the prompt stops before it, as in the book).
pub const RESPONSE_HEADER: &str = "### Response:";
/// The book's `max_new_tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// The file name `generate-responses` writes by default.
pub const RESPONSES_FILE: &str = "test_responses.json";

/// An instruction record and the model's response to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub instruction: String,
    pub input: String,
    pub output: String,
    pub model_response: String,
}

impl ResponseRecord {
    pub fn new(record: &InstructionRecord, model_response: String) -> Self {
        Self {
            instruction: record.instruction.clone(),
            input: record.input.clone(),
            output: record.output.clone(),
            model_response,
        }
    }

    /// The record without the response.
    pub fn record(&self) -> InstructionRecord {
        InstructionRecord { instruction: self.instruction.clone(), input: self.input.clone(), output: self.output.clone() }
    }
}

/// The response in a generated continuation of a prompt: the book's
/// `.replace("### Response:", "").strip()` (every occurrence of the header removed, white space
/// trimmed at both ends).
pub fn extract_response(generated: &str) -> String {
    generated.replace(RESPONSE_HEADER, "").trim().to_string()
}

/// Completes the prompt of every record, `batch_size` prompts at a time, in file order. Row `k`
/// of the whole list samples with seed `config.seed + k`, so sampled responses do not depend on
/// the batch size either. `on_batch(done, total)` is called after each batch.
pub fn generate_completions(
    model: &dyn CausalLm,
    records: &[InstructionRecord],
    config: &GenerateConfig,
    batch_size: usize,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Completion>> {
    anyhow::ensure!(batch_size > 0, "the batch size must be at least 1");
    // Prompts tokenised as fine-tuning tokenised them, with the tokenizer that decodes the responses.
    let prompts: Vec<Vec<u32>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| instruction::encode(&config.tokenizer, &format_input(r)).with_context(|| format!("record {i}")))
        .collect::<Result<_>>()?;
    let mut completions = Vec::with_capacity(records.len());
    for (batch, chunk) in prompts.chunks(batch_size).enumerate() {
        let start = batch * batch_size;
        let config = GenerateConfig { seed: config.seed.wrapping_add(start as u64), ..config.clone() };
        completions.extend(generate(model, chunk, &config)?);
        on_batch(completions.len(), records.len());
    }
    Ok(completions)
}

/// The records with their responses ([`extract_response`] of each completion's text).
pub fn with_responses(records: &[InstructionRecord], completions: &[Completion]) -> Vec<ResponseRecord> {
    records.iter().zip(completions).map(|(r, c)| ResponseRecord::new(r, extract_response(&c.text))).collect()
}

/// [`generate_completions`] then [`with_responses`].
pub fn generate_responses(
    model: &dyn CausalLm,
    records: &[InstructionRecord],
    config: &GenerateConfig,
    batch_size: usize,
    on_batch: impl FnMut(usize, usize),
) -> Result<Vec<ResponseRecord>> {
    let completions = generate_completions(model, records, config, batch_size, on_batch)?;
    Ok(with_responses(records, &completions))
}

/// Writes the records as pretty JSON (4-space indentation, like the book), atomically; creates
/// the parent directory.
pub fn write_responses(path: &Path, records: &[ResponseRecord]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    gpt::io::write_atomic(path, &to_pretty_json(records)?)?;
    Ok(())
}

/// Reads a responses file: a JSON list of records with string `instruction`, `output` and
/// `model_response` (and optionally `input`). Errors name the record index and the file.
pub fn read_responses(path: &Path) -> Result<Vec<ResponseRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_json_list(&text, path)?
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let object = record_object(item, index, path)?;
            Ok(ResponseRecord {
                instruction: required_field(object, "instruction", index, path)?,
                input: string_field(object, "input", index, path)?.unwrap_or_default(),
                output: required_field(object, "output", index, path)?,
                model_response: required_field(object, "model_response", index, path)?,
            })
        })
        .collect()
}

/// The records `--data` names: an Alpaca JSON file, a URL of one (cached in `cache_dir`), or a
/// directory holding the test split `test.json` (itself, or a run directory's `data/test.json`).
/// Returns the file read and its records.
pub fn load_test_records(source: &str, cache_dir: &Path) -> Result<(PathBuf, Vec<InstructionRecord>)> {
    if let Some(dir) = download::local_path(source).filter(|p| p.is_dir()) {
        let test_split = SPLIT_FILES[2];
        let candidates = [dir.join(test_split), dir.join("data").join(test_split)];
        let Some(file) = candidates.iter().find(|p| p.is_file()) else {
            bail!("{} is a directory without a test split ({test_split} or data/{test_split})", dir.display());
        };
        return Ok((file.clone(), instruction::read_records(file)?));
    }
    let loaded = instruction::load_records(source, cache_dir)?;
    Ok((loaded.path, loaded.records))
}
