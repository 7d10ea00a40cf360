//! Alpaca-style instruction data, prepared for instruction fine-tuning as in *Build a Large
//! Language Model From Scratch*, chapter 7:
//!
//! 1. read a JSON list of `{"instruction", "input", "output"}` records ([`read_records`]; any
//!    source, a URL downloaded once into a cache directory, and conversations:
//!    [`load_instruction_data`](super::conversation::load_instruction_data));
//! 2. split 85 % train / 10 % test / 5 % validation in file order, or after a seeded shuffle:
//!    [`split_records`];
//! 3. format each record as an Alpaca prompt ([`format_input`]) followed by the response
//!    ([`full_text`]), and tokenise once: [`InstructionDataset`];
//! 4. batch like the book's `custom_collate_fn`: [`collate`] (optionally masking the prompt), with
//!    an optional length-grouped batch order that cuts padding: [`length_grouped_batches`].
//!
//! With the book's `instruction-data.json` (1,100 records) the splits have 935 / 110 / 55 records.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use gpt::burn::prelude::*;
use gpt::Tokenizer;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::spam::Splits;
use crate::data::{from_record, json_kind, present};
use crate::train::{IGNORE_INDEX, LmBatch, epoch_order};

/// The book's instruction data set (1,100 records).
pub const DEFAULT_URL: &str =
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json";
/// Where downloaded data sets are cached by default.
pub const DEFAULT_CACHE_DIR: &str = "data/instruction";
/// The default seed of `--shuffle` (the book's seed 123).
pub const DEFAULT_SEED: u64 = 123;
/// The split files [`write_splits`] writes, in the order train, validation, test.
pub const SPLIT_FILES: [&str; 3] = ["train.json", "validation.json", "test.json"];
/// The book's `allowed_max_length`: the context of GPT-2.
pub const DEFAULT_ALLOWED_MAX_LENGTH: usize = 1024;
/// Length-grouped batching sorts within groups of this many batches (Hugging Face's
/// `LengthGroupedSampler` default `mega_batch_mult`).
pub const MEGA_BATCH_BATCHES: usize = 50;

/// The first paragraph of every Alpaca prompt.
pub const PREAMBLE: &str =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.";

/// One example: what to do, an optional input to do it on, and the expected response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionRecord {
    pub instruction: String,
    /// Empty when the record has none (missing or `""` in the file).
    pub input: String,
    pub output: String,
}

/// The prompt of a record, exactly as the book's `format_input`:
/// the preamble, `\n\n### Instruction:\n{instruction}`, and `\n\n### Input:\n{input}` when the
/// input is not empty.
pub fn format_input(record: &InstructionRecord) -> String {
    format_input_with(PREAMBLE, record)
}

/// [`format_input`] with another first paragraph: a chat's system message takes the preamble's
/// place (the preamble is the Alpaca format's system prompt).
pub fn format_input_with(preamble: &str, record: &InstructionRecord) -> String {
    let mut text = format!("{preamble}\n\n### Instruction:\n{}", record.instruction);
    if !record.input.is_empty() {
        text.push_str("\n\n### Input:\n");
        text.push_str(&record.input);
    }
    text
}

/// The text a model is trained on: [`format_input`] + `\n\n### Response:\n{output}`.
pub fn full_text(record: &InstructionRecord) -> String {
    format!("{}\n\n### Response:\n{}", format_input(record), record.output)
}

/// A record of `file` as an object, or an error naming both (`at`: "record 3", "line 4").
pub(crate) fn record_object<'a>(value: &'a Value, at: &str, file: &Path) -> Result<&'a serde_json::Map<String, Value>> {
    value.as_object().with_context(|| format!("{}: {at} is {}, expected an object", file.display(), json_kind(value)))
}

/// Field `name` of the record `at`: `Ok(None)` when absent, an error naming the record, the field
/// and the file when it is not a string.
pub(crate) fn string_field(record: &serde_json::Map<String, Value>, name: &str, at: &str, file: &Path) -> Result<Option<String>> {
    match record.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(not_a_string(name, json_kind(other), at, file)),
    }
}

fn not_a_string(name: &str, kind: &str, at: &str, file: &Path) -> anyhow::Error {
    anyhow!("{}: {at}: \"{name}\" is {kind}, expected a string", file.display())
}

fn missing(name: &str, at: &str, file: &Path) -> anyhow::Error {
    anyhow!("{}: {at} has no \"{name}\"", file.display())
}

/// Like [`string_field`], but a missing field is an error too.
pub(crate) fn required_field(record: &serde_json::Map<String, Value>, name: &str, at: &str, file: &Path) -> Result<String> {
    string_field(record, name, at, file)?.ok_or_else(|| missing(name, at, file))
}

/// An Alpaca record as a file has it: a missing field is `None`, `null` is a wrong type.
#[derive(Deserialize)]
struct AlpacaFields {
    #[serde(default, deserialize_with = "present")]
    instruction: Option<String>,
    #[serde(default, deserialize_with = "present")]
    input: Option<String>,
    #[serde(default, deserialize_with = "present")]
    output: Option<String>,
}

/// An Alpaca record from its JSON object: `instruction` and `output` are required strings,
/// `input` an optional string (missing = empty); other keys are ignored. Errors name `file`, the
/// record (`at`) and the field.
pub fn alpaca_record(value: &Value, at: &str, file: &Path) -> Result<InstructionRecord> {
    let fields: AlpacaFields = from_record(value).map_err(|error| match error.path.as_slice() {
        [] => anyhow!("{}: {at} is {}, expected an object", file.display(), error.kind()),
        _ => not_a_string(&error.field(), error.kind(), at, file),
    })?;
    let required = |field: Option<String>, name: &str| field.ok_or_else(|| missing(name, at, file));
    Ok(InstructionRecord {
        instruction: required(fields.instruction, "instruction")?,
        input: fields.input.unwrap_or_default(),
        output: required(fields.output, "output")?,
    })
}

/// `text` parsed as a JSON list, or an error naming `file` (with line and column for bad JSON).
pub(crate) fn parse_json_list(text: &str, file: &Path) -> Result<Vec<Value>> {
    let value: Value = serde_json::from_str(text).with_context(|| format!("{} is not valid JSON", file.display()))?;
    match value {
        Value::Array(items) => Ok(items),
        other => bail!("{}: expected a JSON list of records, found {}", file.display(), json_kind(&other)),
    }
}

/// Parses an Alpaca JSON list. `instruction` and `output` are required strings; `input` is an
/// optional string (missing = empty). Other keys are ignored. A record that is not an object, lacks
/// a required field or has a non-string field is an error naming its (0-based) index and `file`.
pub fn parse_records(text: &str, file: &Path) -> Result<Vec<InstructionRecord>> {
    let items = parse_json_list(text, file)?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| alpaca_record(item, &format!("record {index}"), file))
        .collect()
}

/// Reads and parses an Alpaca JSON file ([`parse_records`]).
pub fn read_records(path: &Path) -> Result<Vec<InstructionRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_records(&text, path)
}

/// Where a downloaded `url` is cached in `cache_dir`: its file name, made unique per URL with a
/// hash (two data sets both called `data.json` must not share a cache entry), and its extension
/// when it is a data file's (else `.json`).
pub fn cache_path(url: &str, cache_dir: &Path) -> PathBuf {
    let last = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or("");
    let clean: String = last.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    // The extension says how the file is read (.jsonl, .parquet, ...): keep a known one.
    let extension = Path::new(&clean).extension().and_then(|e| e.to_str()).filter(|e| super::records::EXTENSIONS.contains(e)).unwrap_or("json");
    let stem = clean.strip_suffix(&format!(".{extension}")).unwrap_or(&clean);
    let stem = if stem.trim_matches(['.', '_']).is_empty() { "instruction-data" } else { stem };
    cache_dir.join(format!("{stem}-{:016x}.{extension}", gpt::io::stable_hash(url)))
}

/// Splits as the book does, with the same float arithmetic: train = `int(n * 0.85)`,
/// test = `int(n * 0.1)`, validation = the rest (935 / 110 / 55 for 1,100 records, 51 / 6 / 3
/// for 60), in this order of the list. With `shuffle` the records are first shuffled with a
/// `StdRng` seeded with `seed`.
/// Any kind of record splits the same way (Alpaca records, conversations).
pub fn split_records<T>(mut records: Vec<T>, shuffle: bool, seed: u64) -> Splits<Vec<T>> {
    if shuffle {
        records.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    let n = records.len();
    let train_len = (n as f64 * 0.85) as usize;
    let test_len = (n as f64 * 0.1) as usize;
    let validation = records.split_off(train_len + test_len);
    let test = records.split_off(train_len);
    Splits { train: records, validation, test }
}

/// Records as pretty JSON (4-space indentation, like the book's `json.dump(..., indent=4)`).
pub fn to_pretty_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut bytes, formatter))?;
    Ok(bytes)
}

/// Writes `train.json`, `validation.json` and `test.json` into `dir`, each atomically (a run
/// directory keeps the exact test split that `generate-responses` reads back).
pub fn write_splits(dir: &Path, splits: &Splits<Vec<InstructionRecord>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, records) in SPLIT_FILES.iter().zip(splits.as_array()) {
        gpt::io::write_atomic(&dir.join(name), &to_pretty_json(records)?)?;
    }
    Ok(())
}

/// Reads the three files [`write_splits`] wrote.
pub fn read_splits(dir: &Path) -> Result<Splits<Vec<InstructionRecord>>> {
    let [train, validation, test] = SPLIT_FILES.map(|name| dir.join(name));
    Ok(Splits { train: read_records(&train)?, validation: read_records(&validation)?, test: read_records(&test)? })
}

/// The text tokenisation of this module. GPT-2: BPE with `<|endoftext|>` in the data read as
/// plain text, so that the only end-of-text tokens in a batch are the ones [`collate`] appends.
/// A `tokenizer.json`: its defaults (Llama 3 starts with `<|begin_of_text|>`), as generation
/// encodes a prompt.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(if tokenizer.is_gpt2() { tokenizer.encode_ordinary(text) } else { tokenizer.try_encode(text)? })
}

/// One example tokenised: its ids, how many of them are the prompt, and (chat data) which tokens
/// the loss learns when the prompt is masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedExample {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
    /// `None`: the tokens from `prompt_len` on, and the end of text [`collate`] appends (Alpaca);
    /// `Some`: one flag a token, the assistant turns (the template writes its own end of turn).
    pub trained: Option<Vec<bool>>,
}

/// An Alpaca record tokenised: the ids of [`full_text`] (with `preamble` as the first paragraph)
/// and how many of them are the prompt ([`format_input`] tokenised alone, as the book's
/// prompt-masking exercise does).
pub fn tokenize_alpaca(preamble: &str, record: &InstructionRecord, tokenizer: &Tokenizer) -> Result<TokenizedExample> {
    let prompt = format_input_with(preamble, record);
    let ids = encode(tokenizer, &format!("{prompt}\n\n### Response:\n{}", record.output))?;
    let prompt_len = encode(tokenizer, &prompt)?.len();
    Ok(TokenizedExample { ids, prompt_len, trained: None })
}

/// Tokenised records, ready to batch ([`TokenizedExample`]s, one field a vector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstructionDataset {
    pub token_ids: Vec<Vec<u32>>,
    pub prompt_lens: Vec<usize>,
    pub trained: Vec<Option<Vec<bool>>>,
    /// Appended to every example and filling the batch ([`collate`]): the tokenizer's end of
    /// sequence (GPT-2's `<|endoftext|>`).
    pub end_token: u32,
}

impl InstructionDataset {
    /// The records tokenised with `tokenizer` (the model's); a text it cannot encode is an
    /// error naming the record.
    pub fn new(records: &[InstructionRecord], tokenizer: &Tokenizer) -> Result<Self> {
        Self::tokenize(records, tokenizer, |record| tokenize_alpaca(PREAMBLE, record, tokenizer))
    }

    /// `items` tokenised in parallel by `tokenize`; an error names the item's index.
    pub fn tokenize<T: Sync>(items: &[T], tokenizer: &Tokenizer, tokenize: impl Fn(&T) -> Result<TokenizedExample> + Sync) -> Result<Self> {
        let examples: Vec<TokenizedExample> = items
            .par_iter()
            .enumerate()
            .map(|(index, item)| tokenize(item).with_context(|| format!("tokenising record {index}")))
            .collect::<Result<_>>()?;
        let mut data = Self { token_ids: Vec::new(), prompt_lens: Vec::new(), trained: Vec::new(), end_token: tokenizer.eot() };
        for example in examples {
            data.token_ids.push(example.ids);
            data.prompt_lens.push(example.prompt_len);
            data.trained.push(example.trained);
        }
        Ok(data)
    }

    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Token counts of the examples (for [`length_grouped_batches`]).
    pub fn lengths(&self) -> Vec<usize> {
        self.token_ids.iter().map(Vec::len).collect()
    }

    /// The batch of examples `indices` ([`collate`]).
    pub fn collate(&self, indices: &[usize], config: &CollateConfig) -> CollatedBatch {
        let examples: Vec<Example<'_>> = indices
            .iter()
            .map(|&i| Example { ids: &self.token_ids[i], prompt_len: self.prompt_lens[i], trained: self.trained[i].as_deref() })
            .collect();
        collate(&examples, config, self.end_token)
    }
}

/// One example as [`collate`] reads it (a borrowed [`TokenizedExample`]).
#[derive(Clone, Copy, Debug)]
pub struct Example<'a> {
    pub ids: &'a [u32],
    pub prompt_len: usize,
    pub trained: Option<&'a [bool]>,
}

impl<'a> Example<'a> {
    /// An Alpaca example: `prompt_len` prompt tokens, then the response.
    pub fn alpaca(ids: &'a [u32], prompt_len: usize) -> Self {
        Self { ids, prompt_len, trained: None }
    }
}

/// How examples become a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateConfig {
    /// Ignore the prompt in the loss: only the response (and its end-of-text) is learned; in
    /// chat data, only the assistant turns.
    pub mask_prompt: bool,
    /// Cut inputs and targets to this many positions (`None`: never cut).
    pub allowed_max_length: Option<usize>,
}

impl Default for CollateConfig {
    fn default() -> Self {
        Self { mask_prompt: false, allowed_max_length: Some(DEFAULT_ALLOWED_MAX_LENGTH) }
    }
}

/// A batch as plain data: `inputs` and `targets` are `[batch, len]`, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollatedBatch {
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl CollatedBatch {
    /// The batch as tensors on `device`, for the language-modelling step.
    pub fn to_lm_batch(&self, device: &Device) -> LmBatch {
        let shape = [self.batch, self.len];
        LmBatch {
            inputs: Tensor::from_data(TensorData::new(self.inputs.clone(), shape), device),
            targets: Tensor::from_data(TensorData::new(self.targets.clone(), shape), device),
        }
    }

    /// Targets that count in the loss (not [`IGNORE_INDEX`]).
    pub fn counted_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
    }
}

/// The book's `custom_collate_fn` (with the prompt masking of its exercise 7.2), for examples
/// given as token ids and a prompt length or a per-token mask ([`Example`]):
///
/// - each example gets an end-of-text token (`end_token`: GPT-2's 50256, or the tokenizer's end of
///   sequence) and the batch is padded with it to its longest example plus one;
/// - inputs are tokens `[:-1]`, targets tokens `[1:]` (so `len` = the longest example's length);
/// - every target after the appended end-of-text is padding and set to -100: the model learns to
///   stop, but not to predict padding;
/// - with `mask_prompt`, the first `prompt_len - 1` targets (those that predict prompt tokens) are
///   -100 too;
/// - an example with a per-token mask (chat data) learns, with `mask_prompt`, only the targets
///   that predict trained tokens, and never the appended end-of-text: the chat template wrote
///   its own end of turn, inside the trained span;
/// - inputs and targets are then cut to `allowed_max_length`.
///
/// Padding is found by position, not by value: the book masks targets equal to 50256 after the
/// first one, which is the same because [`encode`] never produces 50256 inside a text.
pub fn collate(examples: &[Example<'_>], config: &CollateConfig, end_token: u32) -> CollatedBatch {
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let len = config.allowed_max_length.map_or(longest, |max| longest.min(max));
    let mut inputs = Vec::with_capacity(examples.len() * len);
    let mut targets = Vec::with_capacity(examples.len() * len);
    for &Example { ids, prompt_len, trained } in examples {
        // Position p of the padded row (length longest + 1): the text, one end-of-text, padding.
        let token = |p: usize| ids.get(p).copied().unwrap_or(end_token) as i64;
        // Whether the token at position p is learned; the end-of-text sits at ids.len().
        let learned = |p: usize| match trained {
            None => p <= ids.len() && (!config.mask_prompt || p >= prompt_len),
            Some(mask) => p < ids.len() && (!config.mask_prompt || mask[p]),
        };
        for t in 0..len {
            inputs.push(token(t));
            // Target t is row position t + 1.
            targets.push(if learned(t + 1) { token(t + 1) } else { IGNORE_INDEX });
        }
    }
    CollatedBatch { inputs, targets, batch: examples.len(), len }
}

/// One epoch's batches (example indices) with examples of similar length together, which cuts
/// padding, as Hugging Face's `LengthGroupedSampler` (and litgpt) do: the epoch's shuffled order
/// ([`epoch_order`]) is cut into mega-batches of [`MEGA_BATCH_BATCHES`] batches, each mega-batch
/// is sorted by length (longest first, ties in shuffled order) and cut into batches; the batch
/// order is then shuffled, and the batch holding the longest example goes first, so that running
/// out of memory shows at the first step. With `drop_last` the one short batch (if any) is left
/// out. A pure function of (`lengths`, `seed`, `epoch`, `batch_size`, `drop_last`).
pub fn length_grouped_batches(lengths: &[usize], seed: u64, epoch: usize, batch_size: usize, drop_last: bool) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "batch_size must be at least 1");
    let order = epoch_order(lengths.len(), seed, epoch);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for mega in order.chunks(batch_size * MEGA_BATCH_BATCHES) {
        let mut mega = mega.to_vec();
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(mega.chunks(batch_size).map(<[usize]>::to_vec));
    }
    if drop_last {
        batches.retain(|batch| batch.len() == batch_size);
    }
    let mixer = (epoch as u64).wrapping_add(1).wrapping_mul(0xd6e8_feb8_6659_fd93);
    batches.shuffle(&mut StdRng::seed_from_u64(seed ^ mixer));
    let max_len = batches.iter().flatten().map(|&i| lengths[i]).max();
    if let Some(first) = batches.iter().position(|batch| batch.iter().any(|&i| Some(lengths[i]) == max_len)) {
        batches.swap(0, first);
    }
    batches
}
