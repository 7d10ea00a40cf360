//! Proptest strategies for the fuzz tests: byte-level mutations of valid files, and for every JSON
//! reader (config.json, Alpaca records, HellaSwag lines, server requests) JSON values of any shape,
//! biased towards the field names the readers look for and towards numbers at the edges (negative,
//! zero, huge, fractional), so that the typed parsing and the checks after it are reached, not only
//! the syntax errors.
#![allow(dead_code)]

use std::sync::OnceLock;

use gpt::Tokenizer;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// The GPT-2 tokenizer, built once for all the cases of a test binary.
pub fn gpt2_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(Tokenizer::gpt2)
}

/// Names the project's JSON readers look for, and a few they do not.
pub const FIELDS: &[&str] = &[
    "model", "prompt", "messages", "role", "content", "type", "text", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "stop", "seed", "n", "stream", "stream_options", "include_usage", "input",
    "instruction", "output", "ctx", "endings", "label", "ind", "vocab_size", "n_positions", "n_ctx", "n_embd",
    "n_layer", "n_head", "n_inner", "layer_norm_epsilon", "activation_function", "embd_pdrop", "attn_pdrop",
    "resid_pdrop", "tie_word_embeddings", "user", "system", "x", "",
];

pub fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

/// Integers at the edges of the types the readers parse into.
const EDGE_INTEGERS: &[u64] =
    &[0, 1, 255, 256, 65_535, 65_536, 1 << 31, u32::MAX as u64, 1 << 32, 1 << 53, i64::MAX as u64, u64::MAX - 1, u64::MAX];

/// A JSON number, often at the edge of an integer type.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(EDGE_INTEGERS).prop_map(Value::from),
        proptest::sample::select(EDGE_INTEGERS).prop_map(|n| Value::from(-(n.min(i64::MAX as u64) as i64))),
        (-3i64..80).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(|f| Value::Number(Number::from_f64(f).unwrap_or(Number::from(0)))),
        any::<f64>().prop_filter_map("a JSON number is finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        "\\PC{0,16}".prop_map(Value::from),
        proptest::sample::select(FIELDS).prop_map(Value::from),
    ]
}

/// Any JSON value, up to 3 levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A JSON object whose fields are mostly the given `names`, with values of any shape.
pub fn object_with(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let name = prop_oneof![4 => proptest::sample::select(names).prop_map(str::to_string), 1 => field_name()];
    proptest::collection::vec((name, json_value()), 0..8)
        .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<String, Value>>()))
}

/// `valid` with one value somewhere inside replaced by an arbitrary one (or a field dropped):
/// inputs that are almost right, which reach the checks behind the parser.
pub fn mutated(valid: Value) -> impl Strategy<Value = Value> {
    (any::<proptest::sample::Index>(), json_value(), any::<bool>()).prop_map(move |(at, replacement, drop)| {
        let mut value = valid.clone();
        let mut slots = Vec::new();
        collect_paths(&value, &mut Vec::new(), &mut slots);
        if !slots.is_empty() {
            let path = &slots[at.index(slots.len())];
            replace_at(&mut value, path, replacement, drop);
        }
        value
    })
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(path.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(Step::Key(key.clone()));
                collect_paths(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Step::Index(i));
                collect_paths(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn replace_at(value: &mut Value, path: &[Step], replacement: Value, drop: bool) {
    let Some((last, parents)) = path.split_last() else {
        *value = replacement;
        return;
    };
    let mut node = value;
    for step in parents {
        node = match (step, node) {
            (Step::Key(k), Value::Object(map)) => map.get_mut(k).expect("path from collect_paths"),
            (Step::Index(i), Value::Array(items)) => &mut items[*i],
            _ => unreachable!("path from collect_paths"),
        };
    }
    match (last, node) {
        (Step::Key(k), Value::Object(map)) if drop => {
            map.remove(k);
        }
        (Step::Key(k), Value::Object(map)) => {
            map.insert(k.clone(), replacement);
        }
        (Step::Index(i), Value::Array(items)) if drop => {
            items.remove(*i);
        }
        (Step::Index(i), Value::Array(items)) => items[*i] = replacement,
        _ => unreachable!("path from collect_paths"),
    }
}

/// `valid` with a few bytes overwritten, then perhaps cut short or extended: files that are
/// almost right (bit rot, a truncated download, a write that stopped half-way). Half the edits
/// land in the first `hot` bytes (a header).
pub fn mutated_bytes(valid: Vec<u8>, hot: usize) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<bool>(), any::<proptest::sample::Index>(), any::<u8>());
    (proptest::collection::vec(edit, 0..6), proptest::option::of(any::<proptest::sample::Index>()), proptest::collection::vec(any::<u8>(), 0..3))
        .prop_map(move |(edits, cut, tail)| {
            let mut bytes = valid.clone();
            for (in_header, at, byte) in edits {
                let span = if in_header { hot.clamp(1, bytes.len().max(1)) } else { bytes.len().max(1) };
                if let Some(b) = bytes.get_mut(at.index(span)) {
                    *b = byte;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            } else {
                bytes.extend(tail);
            }
            bytes
        })
}
