//! A model's responses to instruction records (the test split), as in *Build a Large Language
//! Model From Scratch*, chapter 7: each record's prompt ([`format_input`]) is completed (greedy by
//! default, up to 256 new tokens, stopping at end-of-text), and the response is the new text with
//! the `### Response:` header removed. Prompts go through the model in batches with the KV cache;
//! left padding makes every row generate exactly what its prompt would alone.
//!
//! Conversations (chat test splits) are answered the same way: the prompt is the conversation
//! up to its last assistant turn ([`ChatRendering::prompt`]), the reference that turn's content.
//!
//! The output file is the records plus `model_response`, what [`crate::eval::judge`] scores.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::models::CausalLm;
use gpt::generate::{Completion, GenerateConfig, generate};
use gpt::text::ChatMessage;
use serde::{Deserialize, Serialize};

use crate::data::chat::ChatRendering;
use crate::data::conversation::{Conversation, InstructionData, find_test_split, load_instruction_data, parse_messages, read_instruction_data};
use crate::data::instruction::{
    self, InstructionRecord, alpaca_record, format_input, parse_json_list, record_object, required_field,
    to_pretty_json,
};
use crate::download;

/// The header the model writes before its response (the prompt stops before it, as in the book).
pub const RESPONSE_HEADER: &str = "### Response:";
/// The book's `max_new_tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// The file name `generate-responses` writes by default.
pub const RESPONSES_FILE: &str = "test_responses.json";

/// An instruction record and the model's response to it. A conversation's record also holds
/// `messages`, the conversation the model answered; its `instruction` is the last user message
/// and `output` the reference (the last assistant turn).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub instruction: String,
    pub input: String,
    pub output: String,
    pub model_response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

impl ResponseRecord {
    pub fn new(record: &InstructionRecord, model_response: String) -> Self {
        Self {
            instruction: record.instruction.clone(),
            input: record.input.clone(),
            output: record.output.clone(),
            model_response,
            messages: None,
        }
    }

    /// A conversation's record: the messages before its last assistant turn, and the response.
    pub fn from_conversation(conversation: &Conversation, model_response: String) -> Self {
        let messages = conversation.prompt_messages().to_vec();
        let instruction = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()).unwrap_or_default();
        Self { instruction, input: String::new(), output: conversation.reference().to_string(), model_response, messages: Some(messages) }
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
    on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Completion>> {
    // Prompts tokenised as fine-tuning tokenised them, with the tokenizer that decodes the responses.
    let prompts: Vec<Vec<u32>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| instruction::encode(&config.tokenizer, &format_input(r)).with_context(|| format!("record {i}")))
        .collect::<Result<_>>()?;
    complete_prompts(model, &prompts, config, batch_size, on_batch)
}

/// [`generate_completions`] for conversations: each prompt is the conversation up to its last
/// assistant turn, rendered by `rendering` as fine-tuning rendered it.
pub fn generate_chat_completions(
    model: &dyn CausalLm,
    conversations: &[Conversation],
    rendering: &ChatRendering,
    config: &GenerateConfig,
    batch_size: usize,
    on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Completion>> {
    let prompts: Vec<Vec<u32>> = conversations
        .iter()
        .enumerate()
        .map(|(i, c)| Ok(rendering.prompt(c, &config.tokenizer).with_context(|| format!("conversation {i}"))?.1))
        .collect::<Result<_>>()?;
    complete_prompts(model, &prompts, config, batch_size, on_batch)
}

/// Completes tokenised prompts, `batch_size` at a time; row `k` samples with seed `config.seed + k`.
fn complete_prompts(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    batch_size: usize,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Completion>> {
    anyhow::ensure!(batch_size > 0, "the batch size must be at least 1");
    let mut completions = Vec::with_capacity(prompts.len());
    for (batch, chunk) in prompts.chunks(batch_size).enumerate() {
        let start = batch * batch_size;
        let config = GenerateConfig { seed: config.seed.wrapping_add(start as u64), ..config.clone() };
        completions.extend(generate(model, chunk, &config)?);
        on_batch(completions.len(), prompts.len());
    }
    Ok(completions)
}

/// The records with their responses ([`extract_response`] of each completion's text).
pub fn with_responses(records: &[InstructionRecord], completions: &[Completion]) -> Vec<ResponseRecord> {
    records.iter().zip(completions).map(|(r, c)| ResponseRecord::new(r, extract_response(&c.text))).collect()
}

/// The conversations with their responses ([`with_responses`] for chat data).
pub fn with_chat_responses(conversations: &[Conversation], completions: &[Completion]) -> Vec<ResponseRecord> {
    conversations.iter().zip(completions).map(|(c, done)| ResponseRecord::from_conversation(c, extract_response(&done.text))).collect()
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
            let at = format!("record {index}");
            let object = record_object(item, &at, path)?;
            let record = alpaca_record(item, &at, path)?;
            Ok(ResponseRecord {
                model_response: required_field(object, "model_response", &at, path)?,
                messages: object.contains_key("messages").then(|| parse_messages(object, "messages", &at, path)).transpose()?,
                ..ResponseRecord::new(&record, String::new())
            })
        })
        .collect()
}

/// The records `--data` names: a file or a URL of one (cached in `cache_dir`) of Alpaca records or
/// conversations, or a directory holding the test split (itself, or a run directory's `data/`):
/// `test.json` (Alpaca) or `test.jsonl` (conversations). Returns the file read and its records.
pub fn load_test_data(source: &str, cache_dir: &Path) -> Result<(PathBuf, InstructionData)> {
    if let Some(dir) = download::local_path(source).filter(|p| p.is_dir()) {
        let Some(file) = find_test_split(&dir) else {
            bail!("{} is a directory without a test split (test.json, test.jsonl, or either in data/)", dir.display());
        };
        let data = read_instruction_data(&file)?;
        return Ok((file, data));
    }
    load_instruction_data(source, cache_dir)
}
