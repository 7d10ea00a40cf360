//! A model's own tokenizer from its Hugging Face files: `tokenizer.json` through Hugging Face's
//! `tokenizers` crate (its pure-Rust regex engine), the special tokens and chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`), and the end-of-sequence ids of
//! `generation_config.json` / `config.json` (a number or a list).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use super::byte_level_bpe::ByteLevelBpe;
use super::chat_template::ChatTemplate;
use crate::error::{GptError, Result};
use crate::models::llama::config::token_ids;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Where newer checkpoints keep the chat template instead of `tokenizer_config.json`.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

pub struct HfTokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    /// Where it was read from (for messages).
    pub(crate) origin: String,
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) bos_id: Option<u32>,
    pub(crate) pad_id: Option<u32>,
    /// `tokenizer_config.json`'s `bos_token` / `eos_token` texts (what chat templates write).
    pub(crate) bos_text: Option<String>,
    pub(crate) eos_text: Option<String>,
    pub(crate) chat_template: Option<ChatTemplate>,
    /// `tokenizer.json`'s path, read again for the fast path the first time it is asked for.
    path: PathBuf,
    fast: OnceLock<Option<ByteLevelBpe>>,
}

impl HfTokenizer {
    /// Reads the tokenizer files of model directory `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        let bytes = std::fs::read(&path).map_err(|e| GptError::io(&path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| GptError::Tokenizer(format!("{}: not a tokenizer.json the tokenizers crate reads: {e}", path.display())))?;
        let config = read_json(&dir.join(TOKENIZER_CONFIG))?.unwrap_or(Value::Null);
        let token_text = |key: &str| match config.get(key) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Object(token)) => token.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let id_of = |key: &str| token_text(key).and_then(|text| inner.token_to_id(&text));
        let model_config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let mut eos_ids = token_ids(generation.get("eos_token_id"));
        if eos_ids.is_empty() {
            eos_ids = token_ids(model_config.get("eos_token_id"));
        }
        if eos_ids.is_empty() {
            eos_ids.extend(id_of("eos_token"));
        }
        let bos_id = id_of("bos_token").or_else(|| token_ids(model_config.get("bos_token_id")).first().copied());
        let pad_id = id_of("pad_token");
        let chat_template = match chat_template_source(dir, &config)? {
            Some((source, origin)) => Some(ChatTemplate::new(
                source,
                token_text("bos_token").unwrap_or_default(),
                token_text("eos_token").unwrap_or_default(),
                &origin,
            )?),
            None => None,
        };
        let (bos_text, eos_text) = (token_text("bos_token"), token_text("eos_token"));
        Ok(Self { inner, origin: path.display().to_string(), eos_ids, bos_id, pad_id, bos_text, eos_text, chat_template, path, fast: OnceLock::new() })
    }

    /// The fast path for `encode_ordinary` ([`ByteLevelBpe`]), where this `tokenizer.json` has a
    /// shape it reproduces and [`FAST_BPE_ENV`] is not `0`; built the first time it is asked for
    /// (reading a vocabulary of 128k tokens and 280k merges takes a moment that generation need
    /// not pay).
    pub(crate) fn fast(&self) -> Option<&ByteLevelBpe> {
        self.fast
            .get_or_init(|| {
                if std::env::var(FAST_BPE_ENV).is_ok_and(|v| v.trim() == "0") {
                    return None;
                }
                let json: Value = serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()?;
                ByteLevelBpe::from_json(&json)
            })
            .as_ref()
    }
}

/// `LLMFS_FAST_BPE=0` encodes every text with `tokenizers` (to compare, or to get round the fast path).
pub const FAST_BPE_ENV: &str = "LLMFS_FAST_BPE";

/// The tokenizer files a model directory may hold, in the order `transformers` writes them.
pub const TOKENIZER_FILES: [&str; 4] = [TOKENIZER_FILE, TOKENIZER_CONFIG, "special_tokens_map.json", CHAT_TEMPLATE_FILE];

/// Copies the tokenizer files of model directory `from` into `to` (each atomically); returns the
/// names copied (`tokenizer.json` must be among them).
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<Vec<&'static str>> {
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if !source.is_file() {
            continue;
        }
        let bytes = std::fs::read(&source).map_err(|e| GptError::io(&source, e))?;
        crate::io::write_atomic(&to.join(name), &bytes)?;
        copied.push(name);
    }
    if !copied.contains(&TOKENIZER_FILE) {
        return Err(GptError::Tokenizer(format!("{}: no {TOKENIZER_FILE} to copy", from.display())));
    }
    Ok(copied)
}

/// `chat_template.jinja`, or `tokenizer_config.json`'s `chat_template`: a string, or a list of
/// named templates of which `default` is the chat one.
fn chat_template_source(dir: &Path, config: &Value) -> Result<Option<(String, String)>> {
    let file = dir.join(CHAT_TEMPLATE_FILE);
    if file.is_file() {
        let text = std::fs::read_to_string(&file).map_err(|e| GptError::io(&file, e))?;
        return Ok(Some((text, file.display().to_string())));
    }
    let origin = dir.join(TOKENIZER_CONFIG).display().to_string();
    let source = match config.get("chat_template") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    };
    Ok(source.map(|text| (text, origin)))
}

/// A JSON file that may be absent (`None`); present but invalid is an error naming it.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| GptError::Json { path: path.to_path_buf(), source: e }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GptError::io(path, e)),
    }
}
