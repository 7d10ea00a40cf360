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

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;
use serde_path_to_error::Segment;

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

/// Why a JSON record did not deserialize ([`from_record`]): the field at fault and what it holds,
/// for the reader to say in its own words.
#[derive(Debug)]
pub(crate) struct FieldError<'a> {
    /// Map keys and list indices down to the field; empty when the record is not an object.
    pub path: Vec<Segment>,
    /// The value found there (`None` where the path leads nowhere).
    pub found: Option<&'a Value>,
    /// serde's message.
    pub message: String,
}

impl FieldError<'_> {
    /// [`json_kind`] of the value found.
    pub fn kind(&self) -> &'static str {
        self.found.map_or("nothing", json_kind)
    }

    /// The path as `key`, or `key[3]` for an item of a list.
    pub fn field(&self) -> String {
        let mut field = String::new();
        for segment in &self.path {
            match segment {
                Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } if field.is_empty() => field.push_str(key),
                Segment::Map { key } | Segment::Enum { variant: key } => field.push_str(&format!(".{key}")),
                Segment::Unknown => field.push_str(".?"),
            }
        }
        field
    }
}

impl std::fmt::Display for FieldError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.path.is_empty() {
            true => write!(f, "{}", self.message),
            false => write!(f, "\"{}\": {}", self.field(), self.message),
        }
    }
}

/// A JSON object deserialized into `T` (serde derive, through `serde_path_to_error`); a value that
/// is no object, or a field of the wrong type, is a [`FieldError`] naming it.
pub(crate) fn from_record<'a, T: DeserializeOwned>(value: &'a Value) -> Result<T, FieldError<'a>> {
    if !value.is_object() {
        return Err(FieldError { path: Vec::new(), found: Some(value), message: format!("expected an object, found {}", json_kind(value)) });
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path: Vec<Segment> = error.path().iter().cloned().collect();
        let found = path.iter().try_fold(value, |value, segment| match segment {
            Segment::Map { key } => value.get(key),
            Segment::Seq { index } => value.get(index),
            _ => None,
        });
        FieldError { path, found, message: error.into_inner().to_string() }
    })
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option` field of a record: a missing
/// field is `None`, and `null` is a value of the wrong type like any other (serde's `Option` would
/// take it for a missing field).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}
