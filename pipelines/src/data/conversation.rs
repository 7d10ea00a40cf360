//! Chat-format instruction data: conversations in OpenAI's fine-tuning form
//! (`{"messages": [{"role": "system|user|assistant", "content": …}, …]}`) or ShareGPT's
//! (`{"conversations": [{"from": "system|human|gpt", "value": …}, …]}`), next to Alpaca records.
//! Parsing goes one record (a JSON object and where it was: "line 3", "record 2") at a time, so
//! that records from any file reader become [`InstructionData`].
//!
//! A run keeps chat splits as `train.jsonl`, `validation.jsonl`, `test.jsonl` in OpenAI's form.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::io::HubOptions;
use gpt::text::ChatMessage;
use serde_json::{Value, json};

use super::instruction::{InstructionRecord, SPLIT_FILES, Splits, alpaca_record, cache_path, record_object};
use super::records::read_records;
use super::source::DataSource;
use crate::data::json_kind;
use crate::download;

/// The split files of chat data, in the order train, validation, test.
pub const CHAT_SPLIT_FILES: [&str; 3] = ["train.jsonl", "validation.jsonl", "test.jsonl"];

/// One conversation: its messages in order, with at least one assistant turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
}

impl Conversation {
    /// Where the last assistant turn starts: the messages before it are what a model answers.
    fn last_assistant(&self) -> usize {
        self.messages.iter().rposition(|m| m.role == "assistant").unwrap_or(self.messages.len())
    }

    /// The conversation up to (not including) its last assistant turn.
    pub fn prompt_messages(&self) -> &[ChatMessage] {
        &self.messages[..self.last_assistant()]
    }

    /// The last assistant turn's content: the reference answer.
    pub fn reference(&self) -> &str {
        self.messages.get(self.last_assistant()).map_or("", |m| m.content.as_str())
    }

    /// `(system, user, assistant)` when the conversation is one exchange: an optional system
    /// message, one user message and one assistant message, in this order.
    pub fn single_turn(&self) -> Option<(Option<&str>, &str, &str)> {
        let roles: Vec<&str> = self.messages.iter().map(|m| m.role.as_str()).collect();
        let content = |i: usize| self.messages[i].content.as_str();
        match roles[..] {
            ["user", "assistant"] => Some((None, content(0), content(1))),
            ["system", "user", "assistant"] => Some((Some(content(0)), content(1), content(2))),
            _ => None,
        }
    }

    /// The conversation in OpenAI's form, one JSON line of a split file.
    pub fn to_json(&self) -> Value {
        json!({ "messages": self.messages.iter().map(|m| json!({ "role": m.role, "content": m.content })).collect::<Vec<_>>() })
    }
}

/// One parsed record.
#[derive(Clone, Debug, PartialEq)]
pub enum InstructionItem {
    Alpaca(InstructionRecord),
    Chat(Conversation),
}

/// A whole data set: Alpaca records or conversations (one file holds one kind).
#[derive(Clone, Debug, PartialEq)]
pub enum InstructionData {
    Alpaca(Vec<InstructionRecord>),
    Chat(Vec<Conversation>),
}

impl InstructionData {
    pub fn len(&self) -> usize {
        match self {
            Self::Alpaca(records) => records.len(),
            Self::Chat(conversations) => conversations.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` records.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Self::Alpaca(records) => records.truncate(n),
            Self::Chat(conversations) => conversations.truncate(n),
        }
    }
}

/// One record of `file`: an object with `messages` (OpenAI), `conversations` (ShareGPT) or
/// `instruction`/`output` (Alpaca). Errors name `file` and `at`.
pub fn parse_item(value: &Value, at: &str, file: &Path) -> Result<InstructionItem> {
    let object = record_object(value, at, file)?;
    let conversation = |messages: Vec<ChatMessage>| {
        if !messages.iter().any(|m| m.role == "assistant") {
            bail!("{}: {at}: the conversation has no assistant turn (nothing to learn)", file.display());
        }
        Ok(InstructionItem::Chat(Conversation { messages }))
    };
    if object.contains_key("messages") {
        conversation(parse_messages(object, "messages", at, file)?)
    } else if object.contains_key("conversations") {
        conversation(parse_messages(object, "conversations", at, file)?)
    } else {
        alpaca_record(value, at, file).map(InstructionItem::Alpaca).with_context(|| {
            format!("{}: {at}: expected a conversation (\"messages\" or \"conversations\") or an Alpaca record", file.display())
        })
    }
}

/// The list of messages under `key` of a record: OpenAI's (`messages`: `role`, `content`) or
/// ShareGPT's (`conversations`: `from`, `value`). Errors name `file`, `at` and the message.
pub fn parse_messages(object: &serde_json::Map<String, Value>, key: &str, at: &str, file: &Path) -> Result<Vec<ChatMessage>> {
    let (role_key, content_key) = if key == "conversations" { ("from", "value") } else { ("role", "content") };
    let Some(Value::Array(items)) = object.get(key) else {
        bail!("{}: {at}: \"{key}\" is {}, expected a list of messages", file.display(), object.get(key).map_or("missing", json_kind));
    };
    items
        .iter()
        .enumerate()
        .map(|(n, item)| message(item, role_key, content_key).map_err(|why| anyhow::anyhow!("{}: {at}: message {n}: {why}", file.display())))
        .collect()
}

/// One message with its role under `role_key` (OpenAI's `role`, ShareGPT's `from`, whose
/// `human`/`gpt` become `user`/`assistant`) and its text under `content_key`.
fn message(item: &Value, role_key: &str, content_key: &str) -> Result<ChatMessage, String> {
    let object = item.as_object().ok_or_else(|| format!("it is {}, expected an object", json_kind(item)))?;
    let text = |key: &str| match object.get(key) {
        Some(Value::String(text)) => Ok(text.as_str()),
        Some(other) => Err(format!("\"{key}\" is {}, expected a string", json_kind(other))),
        None => Err(format!("no \"{key}\"")),
    };
    let role = match text(role_key)? {
        "system" => "system",
        "user" | "human" => "user",
        "assistant" | "gpt" => "assistant",
        other => return Err(format!("unknown role {other:?} (expected system, user or assistant; ShareGPT's human or gpt)")),
    };
    Ok(ChatMessage::new(role, text(content_key)?))
}

/// Parsed records as one data set; a file that mixes conversations and Alpaca records is an
/// error naming the first record of the other kind.
pub fn collect_items(items: impl IntoIterator<Item = (String, InstructionItem)>, file: &Path) -> Result<InstructionData> {
    let mut alpaca = Vec::new();
    let mut chat = Vec::new();
    for (at, item) in items {
        match item {
            InstructionItem::Alpaca(record) if chat.is_empty() => alpaca.push(record),
            InstructionItem::Chat(conversation) if alpaca.is_empty() => chat.push(conversation),
            _ => bail!("{}: {at}: conversations and Alpaca records are mixed; use one kind a file", file.display()),
        }
    }
    Ok(if chat.is_empty() { InstructionData::Alpaca(alpaca) } else { InstructionData::Chat(chat) })
}

/// Reads an instruction file (JSONL, a JSON list, CSV / TSV with instruction, input and output
/// columns, parquet: [`read_records`]) of Alpaca records or conversations.
pub fn read_instruction_data(path: &Path) -> Result<InstructionData> {
    let items = read_records(path, None)?
        .into_iter()
        .map(|record| Ok((record.at.clone(), parse_item(&record.value, &record.at, path)?)))
        .collect::<Result<Vec<_>>>()?;
    collect_items(items, path)
}

/// [`read_instruction_data`] of a local file, or of an http(s) URL downloaded once into
/// `cache_dir` (a download that is no data set is deleted, so that the next run fetches it again).
/// Returns the file read and its records.
pub fn load_instruction_data(source: &str, cache_dir: &Path) -> Result<(PathBuf, InstructionData)> {
    if source.starts_with("hf:") || Path::new(source).is_dir() {
        return read_source(source);
    }
    let cache = cache_path(source, cache_dir);
    let path = download::fetch_cached(source, &cache)?;
    match read_instruction_data(&path) {
        Ok(data) => Ok((path, data)),
        Err(error) if path == cache => {
            let _ = std::fs::remove_file(&cache);
            Err(error.context(format!("{source} did not give an instruction data set (the download was deleted)")))
        }
        Err(error) => Err(error),
    }
}

/// The main split (`@split`, else `train`) of an `hf:` data set or a directory of split files
/// ([`DataSource`]), as one instruction data set; the name returned says which split it was.
fn read_source(source: &str) -> Result<(PathBuf, InstructionData)> {
    let data = DataSource::open(source, &HubOptions::from_env())?;
    let split = data.main_split("train")?;
    let items = data
        .read(&split, None)?
        .into_iter()
        .map(|record| Ok((record.at.clone(), parse_item(&record.value, &record.at, &record.file)?)))
        .collect::<Result<Vec<_>>>()?;
    let name = PathBuf::from(data.split_label(&split));
    let data = collect_items(items, &name)?;
    Ok((name, data))
}

/// Conversations as JSON lines in OpenAI's form.
pub fn to_jsonl(conversations: &[Conversation]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for conversation in conversations {
        serde_json::to_writer(&mut bytes, &conversation.to_json())?;
        bytes.push(b'\n');
    }
    Ok(bytes)
}

/// Writes conversation splits into `dir` as JSON lines ([`CHAT_SPLIT_FILES`]), each atomically
/// (Alpaca splits: [`super::instruction::write_splits`]).
pub fn write_chat_splits(dir: &Path, splits: &Splits<Vec<Conversation>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, split) in CHAT_SPLIT_FILES.iter().zip(splits.as_array()) {
        gpt::io::write_atomic(&dir.join(name), &to_jsonl(split)?)?;
    }
    Ok(())
}

/// The test split in `dir` (a run's `data/`, or a directory of splits): `test.json` or `test.jsonl`.
pub fn find_test_split(dir: &Path) -> Option<PathBuf> {
    let names = [SPLIT_FILES[2], CHAT_SPLIT_FILES[2]];
    [dir.to_path_buf(), dir.join("data")].iter().flat_map(|d| names.map(|n| d.join(n))).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of reading `lines` as a JSONL file called data.jsonl.
    fn error(lines: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let message = format!("{:#}", read_instruction_data(&path).unwrap_err());
        message.replace(&dir.path().display().to_string(), "DIR")
    }

    #[test]
    fn bad_conversations_are_errors_naming_the_line() {
        let ok = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
        assert_eq!(
            error(&[ok, r#"{"messages": [{"role": "user", "content": "Hi"}]}"#]),
            "DIR/data.jsonl: line 2: the conversation has no assistant turn (nothing to learn)"
        );
        assert_eq!(
            error(&[ok, ok, r#"{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}"#]),
            "DIR/data.jsonl: line 3: message 0: unknown role \"tool\" (expected system, user or assistant; ShareGPT's human or gpt)"
        );
        assert_eq!(
            error(&[r#"{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": 5}]}"#]),
            "DIR/data.jsonl: line 1: message 1: \"value\" is a number, expected a string"
        );
        assert_eq!(
            error(&[ok, r#"{"messages": [{"role": "user", "content": ["a"]}]}"#]),
            "DIR/data.jsonl: line 2: message 0: \"content\" is a list, expected a string"
        );
        assert_eq!(error(&[r#"{"messages": "hi"}"#]), "DIR/data.jsonl: line 1: \"messages\" is a string, expected a list of messages");
        assert_eq!(
            error(&[ok, r#"{"instruction": "i", "output": "o"}"#]),
            "DIR/data.jsonl: line 2: conversations and Alpaca records are mixed; use one kind a file"
        );
        let unknown = error(&[r#"{"prompt": "x"}"#]);
        assert!(unknown.starts_with("DIR/data.jsonl: line 1: expected a conversation") && unknown.contains("has no \"instruction\""), "{unknown}");
    }

    #[test]
    fn alpaca_lines_and_conversations_are_read_and_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpaca.jsonl");
        std::fs::write(&path, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"input\": \"d\", \"output\": \"e\"}\n").unwrap();
        let record = |i: &str, n: &str, o: &str| InstructionRecord { instruction: i.into(), input: n.into(), output: o.into() };
        assert_eq!(read_instruction_data(&path).unwrap(), InstructionData::Alpaca(vec![record("a", "", "b"), record("c", "d", "e")]));

        let chat = Conversation { messages: vec![ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", "Hello"), ChatMessage::new("user", "Bye")] };
        assert_eq!((chat.prompt_messages().len(), chat.reference()), (1, "Hello"));
        let splits = Splits { train: vec![chat.clone(), chat.clone()], validation: vec![chat.clone()], test: vec![] };
        write_chat_splits(dir.path(), &splits).unwrap();
        assert_eq!(read_instruction_data(&dir.path().join("train.jsonl")).unwrap(), InstructionData::Chat(vec![chat.clone(), chat]));
        assert_eq!(std::fs::read_to_string(dir.path().join("test.jsonl")).unwrap(), "");
        assert_eq!(find_test_split(dir.path()), Some(dir.path().join("test.jsonl")));
    }
}
