//! HellaSwag (Zellers et al., 2019): pick the most plausible of 4 endings for a short context.
//! The data as build-nanogpt's `hellaswag.py` uses it:
//!
//! 1. `hellaswag_{train,val,test}.jsonl` from the HellaSwag repository, downloaded once into a data
//!    directory ([`download_split`], through [`crate::download::fetch_cached`]); one JSON object a
//!    line with (among others) `ind`, `ctx`, `endings` (4 strings) and `label` (0–3; the test split
//!    has none);
//! 2. [`render_example`]: the context tokens, then for each ending the tokens of `" " + ending`;
//!    4 rows of context + ending, zero-padded to the longest, with a mask of 1 on the ending tokens.
//!
//! Scoring lives in [`crate::eval::hellaswag`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::Tokenizer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::data::{FieldError, from_record, present, records};
use crate::download;

/// Where the HellaSwag repository keeps its data files (`hellaswag_val.jsonl`, ...).
pub const DEFAULT_URL: &str = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/";
/// The data directory the CLI and the examples use by default.
pub const DEFAULT_DATA_DIR: &str = "data/hellaswag";
/// Every example has this many candidate endings.
pub const NUM_ENDINGS: usize = 4;

/// A split of the data set. The test split has no labels (they are kept private).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The file name in the repository and in the data directory: `hellaswag_val.jsonl`, ...
    pub fn file_name(self) -> String {
        format!("hellaswag_{}.jsonl", self.name())
    }

    /// Whether its examples carry a `label`.
    pub fn is_labelled(self) -> bool {
        self != Split::Test
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("unknown HellaSwag split {text:?}: expected train, val or test"))
    }
}

/// The source of a split's file under `base`: an http(s) URL (a `/` is added when missing), a
/// `file://` URL or a local directory.
pub fn split_url(base: &str, split: Split) -> String {
    let file = split.file_name();
    match download::local_path(base) {
        Some(dir) if !base.starts_with("file://") => dir.join(file).to_string_lossy().into_owned(),
        _ if base.ends_with('/') => format!("{base}{file}"),
        _ => format!("{base}/{file}"),
    }
}

/// The file of `split` in `data_dir`.
pub fn split_path(data_dir: &Path, split: Split) -> PathBuf {
    data_dir.join(split.file_name())
}

/// Returns the local file of `split`: `data_dir/hellaswag_<split>.jsonl` when it is there, else
/// downloaded there from `base` first. A local `base` directory is read in place.
pub fn download_split(base: &str, data_dir: &Path, split: Split) -> Result<PathBuf> {
    let source = split_url(base, split);
    download::fetch_cached(&source, &split_path(data_dir, split))
        .with_context(|| format!("cannot get the HellaSwag {split} split"))
}

/// One HellaSwag example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The data set's `ind`, or the example's 0-based position in its file when the line has none.
    pub ind: u64,
    /// The 1-based line of the file it was read from (for messages).
    pub line: usize,
    pub ctx: String,
    pub endings: [String; NUM_ENDINGS],
    /// The index of the right ending; `None` only in the test split.
    pub label: Option<usize>,
}

/// Reads a labelled HellaSwag jsonl file (train or val). Blank lines are skipped. Any other line
/// that is not a JSON object with a string `ctx`, 4 string `endings` and an integer `label` in 0..4
/// is an error naming the file and the line.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    read_jsonl(path, true)
}

/// Reads a HellaSwag jsonl file whose examples may lack `label` (the test split).
pub fn read_unlabelled_examples(path: &Path) -> Result<Vec<Example>> {
    read_jsonl(path, false)
}

fn read_jsonl(path: &Path, labelled: bool) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let at = |line: usize, message: String| anyhow::anyhow!("{} line {line}: {message}", path.display());
    records::jsonl_values(&bytes)
        .enumerate()
        .map(|(position, line)| {
            let (line, value) = line.map_err(|e| at(e.line, e.message))?;
            parse_example(&value, line, position as u64, labelled).map_err(|message| at(line, message))
        })
        .collect()
}

/// A line as the file has it: a missing field is `None`, `null` is a wrong type.
#[derive(Deserialize)]
struct Line {
    #[serde(default, deserialize_with = "present")]
    ind: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    ctx: Option<String>,
    #[serde(default, deserialize_with = "present")]
    endings: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    label: Option<u64>,
}

/// Checks one line's fields; the error says what is wrong with it (the caller adds file and line).
fn parse_example(value: &Value, line: usize, position: u64, labelled: bool) -> Result<Example, String> {
    let fields: Line = from_record(value).map_err(|error| field_error(&error))?;
    let missing = |key: &str| format!("missing key \"{key}\"");
    let ctx = fields.ctx.ok_or_else(|| missing("ctx"))?;
    let endings = fields.endings.ok_or_else(|| missing("endings"))?;
    let endings: [String; NUM_ENDINGS] =
        endings.try_into().map_err(|items: Vec<String>| format!("\"endings\" has {} entries, expected {NUM_ENDINGS}", items.len()))?;
    let label = match fields.label {
        None if labelled => return Err(missing("label")),
        None => None,
        Some(label) if label < NUM_ENDINGS as u64 => Some(label as usize),
        Some(label) => return Err(label_error(&label)),
    };
    Ok(Example { ind: fields.ind.unwrap_or(position), line, ctx, endings, label })
}

fn label_error(found: &dyn std::fmt::Display) -> String {
    format!("\"label\" must be an integer from 0 to {}, found {found}", NUM_ENDINGS - 1)
}

/// A field of the wrong type, in this data set's words.
fn field_error(error: &FieldError<'_>) -> String {
    let kind = error.kind();
    let key = |segment: &Segment, name: &str| matches!(segment, Segment::Map { key } if key == name);
    match (error.path.as_slice(), error.found) {
        ([], _) => format!("expected a JSON object, found {kind}"),
        ([field], _) if key(field, "ctx") => format!("\"ctx\" must be a string, found {kind}"),
        ([field], _) if key(field, "endings") => format!("\"endings\" must be a list of {NUM_ENDINGS} strings, found {kind}"),
        ([field, Segment::Seq { index }], _) if key(field, "endings") => format!("ending {index} must be a string, found {kind}"),
        ([field], Some(found)) if key(field, "label") => label_error(found),
        ([field], Some(found)) if key(field, "ind") => format!("\"ind\" must be a non-negative integer, found {found}"),
        _ => error.to_string(),
    }
}

/// An example as the model sees it: 4 rows of context + ending, zero-padded to the longest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedExample {
    /// `tokenizer.encode(ctx)`.
    pub ctx_tokens: Vec<u32>,
    /// `tokenizer.encode(" " + ending)` for each ending.
    pub ending_tokens: [Vec<u32>; NUM_ENDINGS],
    /// `ctx_tokens + ending_tokens[i]`, then zeros up to [`RenderedExample::width`].
    pub tokens: [Vec<u32>; NUM_ENDINGS],
    /// 1 on the ending tokens, 0 on the context and the padding.
    pub mask: [Vec<u8>; NUM_ENDINGS],
    pub label: Option<usize>,
}

impl RenderedExample {
    /// The length of every row: that of the longest context + ending.
    pub fn width(&self) -> usize {
        self.tokens[0].len()
    }
}

/// Tokenises an example exactly as build-nanogpt's `render_example`. Special-token strings such as
/// `<|endoftext|>` are encoded as plain text (tiktoken's `encode` would refuse them; HellaSwag has none).
pub fn render_example(tokenizer: &Tokenizer, example: &Example) -> RenderedExample {
    let ctx_tokens = tokenizer.encode_ordinary(&example.ctx);
    // The leading space: GPT-2's BPE folds a word's preceding space into the word's token.
    let ending_tokens = example.endings.each_ref().map(|ending| tokenizer.encode_ordinary(&format!(" {ending}")));
    let width = ctx_tokens.len() + ending_tokens.iter().map(Vec::len).max().unwrap_or(0);
    let tokens = ending_tokens.each_ref().map(|ending| {
        let mut row = Vec::with_capacity(width);
        row.extend_from_slice(&ctx_tokens);
        row.extend_from_slice(ending);
        row.resize(width, 0);
        row
    });
    let mask = ending_tokens.each_ref().map(|ending| {
        let mut row = vec![0u8; width];
        row[ctx_tokens.len()..ctx_tokens.len() + ending.len()].fill(1);
        row
    });
    RenderedExample { ctx_tokens, ending_tokens, tokens, mask, label: example.label }
}

/// What [`prepare`] did for one split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreparedSplit {
    pub split: Split,
    pub path: PathBuf,
    /// Examples in the file (each checked like [`read_examples`] does).
    pub examples: usize,
    /// The file was already in the data directory: nothing was downloaded.
    pub reused: bool,
}

/// Downloads (or, from a local `base` directory, copies) `splits` into `data_dir`, keeping files
/// already there, and checks that every line of each parses.
pub fn prepare(base: &str, data_dir: &Path, splits: &[Split]) -> Result<Vec<PreparedSplit>> {
    splits
        .iter()
        .map(|&split| {
            let path = split_path(data_dir, split);
            let reused = path.is_file();
            if !reused {
                download::download_to(&split_url(base, split), &path)
                    .with_context(|| format!("cannot get the HellaSwag {split} split"))?;
            }
            let examples = if split.is_labelled() { read_examples(&path)? } else { read_unlabelled_examples(&path)? };
            if examples.is_empty() {
                bail!("{} holds no examples", path.display());
            }
            Ok(PreparedSplit { split, path, examples: examples.len(), reused })
        })
        .collect()
}
