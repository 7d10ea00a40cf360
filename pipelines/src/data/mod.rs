//! Data sets: download, parse, split, tokenise.

pub mod chat;
pub mod conversation;
pub mod fineweb;
pub mod hellaswag;
pub mod instruction;
pub mod labelled;
pub mod parquet_file;
pub mod records;
pub mod source;
pub mod shards;
pub mod spam;

/// "a number", "an object", ...: what a JSON value is, for the error messages of the parsers here.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// At most `max` characters of user data for an error message, with `…` when cut: a message must
/// not repeat a 16 MB line back.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let cut: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() { format!("{cut}…") } else { cut }
}
