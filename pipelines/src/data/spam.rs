//! The SMS Spam Collection (UCI data set 228), prepared for classification fine-tuning as in
//! *Build a Large Language Model From Scratch*, chapter 6:
//!
//! 1. download the zip (kept in the output directory as a cache) and read its `SMSSpamCollection`:
//!    one message a line, `label<TAB>text`, label `ham` or `spam`;
//! 2. balance: keep every spam, draw as many ham at random (seeded);
//! 3. shuffle (seeded) and split 70/10/20 into `train.csv`, `validation.csv`, `test.csv`
//!    (header `Label,Text`, Label 0 = ham, 1 = spam);
//! 4. for training, tokenise once and pad with `<|endoftext|>` (50256) to one length: [`SpamDataset`].
//!
//! With the real collection (4,827 ham, 747 spam) the splits have 1045/149/300 messages, as in the book.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use gpt::burn::data::dataset::{Dataset, DatasetError};
use gpt::Tokenizer;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;

use crate::download;

/// Where the collection is downloaded from by default.
pub const DEFAULT_URL: &str = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip";
/// The downloaded zip, kept in the output directory so that a second run does not download again.
pub const ZIP_FILE_NAME: &str = "sms_spam_collection.zip";
/// The file inside the zip that holds the messages.
pub const ENTRY_NAME: &str = "SMSSpamCollection";
/// The default seed (the book's `random_state=123`).
pub const DEFAULT_SEED: u64 = 123;

/// Class index of ham (a normal message).
pub const HAM: usize = 0;
/// Class index of spam.
pub const SPAM: usize = 1;
/// Label names by class index.
pub const LABEL_NAMES: [&str; 2] = ["ham", "spam"];

/// The split files, in the order train, validation, test.
pub const SPLIT_FILES: [&str; 3] = ["train.csv", "validation.csv", "test.csv"];
/// The header of every split file.
pub const CSV_HEADER: [&str; 2] = ["Label", "Text"];

/// How many skipped lines are reported by number (the count covers all of them).
const REPORTED_SKIPS: usize = 10;

/// One labelled message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The class index: [`HAM`] (0) or [`SPAM`] (1) here, any class of a labelled set
    /// (`crate::data::labelled`) otherwise.
    pub label: usize,
    pub text: String,
}

/// Why a line of the collection was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No TAB between label and text.
    NoTab,
    /// The label is neither `ham` nor `spam`.
    UnknownLabel,
    /// Nothing but white space after the TAB.
    EmptyText,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::NoTab => "no tab",
            SkipReason::UnknownLabel => "unknown label",
            SkipReason::EmptyText => "empty text",
        })
    }
}

/// A skipped line: its 1-based number in the file and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedLine {
    pub line: usize,
    pub reason: SkipReason,
}

/// The messages of a collection file and what was wrong with the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collection {
    /// The valid messages, in file order.
    pub messages: Vec<Message>,
    /// Non-blank lines read (valid + skipped).
    pub lines: usize,
    /// Lines skipped, all of them.
    pub skipped: usize,
    /// The first few skipped lines (up to 10).
    pub first_skipped: Vec<SkippedLine>,
    /// Lines with bytes that are not UTF-8; kept, with U+FFFD in place of the bad bytes.
    pub invalid_utf8_lines: usize,
}

/// Parses the `SMSSpamCollection` format: one message a line, `label<TAB>text`, split at the FIRST
/// tab (later tabs belong to the text). Labels are `ham`/`spam` (case and surrounding white space
/// ignored). Lines without a tab, with another label or with empty text are skipped and counted;
/// blank lines are ignored, as pandas does. A trailing `\r` (CRLF files) and a UTF-8 BOM are
/// dropped; the text is otherwise kept byte for byte (HTML entities such as `&lt;` included). Bytes
/// that are not UTF-8 become U+FFFD (lossy, like `errors="replace"`): a message is better kept
/// with one odd character than dropped, and the count is reported.
pub fn parse_collection(bytes: &[u8]) -> Collection {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut collection = Collection::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        collection.lines += 1;
        if std::str::from_utf8(raw).is_err() {
            collection.invalid_utf8_lines += 1;
        }
        let line = String::from_utf8_lossy(raw);
        match parse_line(&line) {
            Ok(message) => collection.messages.push(message),
            Err(reason) => {
                collection.skipped += 1;
                if collection.first_skipped.len() < REPORTED_SKIPS {
                    collection.first_skipped.push(SkippedLine { line: index + 1, reason });
                }
            }
        }
    }
    collection
}

fn parse_line(line: &str) -> Result<Message, SkipReason> {
    let (label, text) = line.split_once('\t').ok_or(SkipReason::NoTab)?;
    let label = match label.trim().to_ascii_lowercase().as_str() {
        "ham" => HAM,
        "spam" => SPAM,
        _ => return Err(SkipReason::UnknownLabel),
    };
    if text.trim().is_empty() {
        return Err(SkipReason::EmptyText);
    }
    Ok(Message { label, text: text.to_string() })
}

/// Reads the collection from a zip: the entry named `SMSSpamCollection`, at the root or in any
/// folder of the archive. A file that is not a zip, a truncated or corrupt one, or one without
/// that entry is an error naming the file.
pub fn read_collection_zip(path: &Path) -> Result<Collection> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive, or is truncated", path.display()))?;
    let index = (0..archive.len())
        .find(|&i| archive.name_for_index(i).is_some_and(|name| name.rsplit('/').next() == Some(ENTRY_NAME)))
        .with_context(|| {
            format!("{} has no file named {ENTRY_NAME}: is it the SMS Spam Collection?", path.display())
        })?;
    let mut entry =
        archive.by_index(index).with_context(|| format!("cannot read {ENTRY_NAME} in {}", path.display()))?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("{ENTRY_NAME} in {} is corrupt or truncated", path.display()))?;
    Ok(parse_collection(&bytes))
}

/// Three parts of a data set: messages, tokenised data sets, counts, ...
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Splits<T> {
    pub train: T,
    pub validation: T,
    pub test: T,
}

impl<T> Splits<T> {
    /// The parts in the order of [`SPLIT_FILES`].
    pub fn as_array(&self) -> [&T; 3] {
        [&self.train, &self.validation, &self.test]
    }
}

/// Balances the classes, shuffles and splits, all from one `StdRng` seeded with `seed`:
/// the larger class (ham, in the real collection) is randomly downsampled to the size of the
/// smaller one; the balanced set is shuffled and cut into train = ⌊0.7·n⌋, validation = ⌊0.1·n⌋
/// and test = the rest, computed exactly in integers (the book's `int(len(df) * 0.7)` in floating
/// point agrees for the real collection, 1045 / 149 / 300, but is one short for some n, e.g. 90).
pub fn balance_and_split(messages: Vec<Message>, seed: u64) -> Splits<Vec<Message>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (ham, spam): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.label == HAM);
    let per_class = ham.len().min(spam.len());
    let mut balanced = downsample(ham, per_class, &mut rng);
    balanced.extend(downsample(spam, per_class, &mut rng));
    balanced.shuffle(&mut rng);

    let n = balanced.len();
    let train_len = n * 7 / 10;
    let validation_len = n / 10;
    let test = balanced.split_off(train_len + validation_len);
    let validation = balanced.split_off(train_len);
    Splits { train: balanced, validation, test }
}

/// `amount` messages drawn at random, in their original order (all of them when there are no more).
fn downsample(messages: Vec<Message>, amount: usize, rng: &mut StdRng) -> Vec<Message> {
    if amount >= messages.len() {
        return messages;
    }
    let mut keep = rand::seq::index::sample(rng, messages.len(), amount).into_vec();
    keep.sort_unstable();
    let mut keep = keep.into_iter().peekable();
    let mut chosen = Vec::with_capacity(amount);
    for (i, message) in messages.into_iter().enumerate() {
        if keep.next_if_eq(&i).is_some() {
            chosen.push(message);
        }
    }
    chosen
}

/// Writes `train.csv`, `validation.csv`, `test.csv` (header `Label,Text`, quoted where needed)
/// into `dir`: all three or none. Each is written to a temporary file first; only when all three
/// are complete and synced are they renamed into place. On any error the temporary files are
/// removed, and so is any split already renamed, so `dir` never holds a mixed set.
pub fn write_splits(dir: &Path, splits: &Splits<Vec<Message>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let finals = SPLIT_FILES.map(|name| dir.join(name));
    let temps = finals.each_ref().map(|path| gpt::io::temp_path_for(path));
    let written = (|| {
        for ((messages, tmp), path) in splits.as_array().into_iter().zip(&temps).zip(&finals) {
            write_csv(tmp, messages).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    })();
    if let Err(error) = written {
        remove_all(&temps);
        return Err(error);
    }
    for (i, (tmp, path)) in temps.iter().zip(&finals).enumerate() {
        if let Err(error) = std::fs::rename(tmp, path) {
            remove_all(&finals[..i]);
            remove_all(&temps[i..]);
            return Err(error).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()));
        }
    }
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all(); // persist the renames; not every platform can open a directory
    }
    Ok(())
}

/// Best-effort clean-up after a failure (the first error is the one worth reporting).
fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

fn write_csv(path: &Path, messages: &[Message]) -> Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(CSV_HEADER)?;
    for message in messages {
        writer.write_record([message.label.to_string().as_str(), &message.text])?;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Reads a split file written by [`write_splits`] (or by the book's pandas code): header
/// `Label,Text` required, Label 0 or 1. A bad header, label or row is an error naming the file
/// and line.
pub fn read_split_csv(path: &Path) -> Result<Vec<Message>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot open {}", path.display()))?;
    let header = reader.headers().with_context(|| format!("{}: cannot read the header", path.display()))?;
    ensure!(
        header.iter().eq(CSV_HEADER),
        "{}: line 1: the header is `{}`, expected `Label,Text`",
        path.display(),
        super::excerpt(&header.iter().collect::<Vec<_>>().join(","), 80)
    );
    let mut messages = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| format!("line {}: ", p.line())).unwrap_or_default();
            anyhow::anyhow!("{}: {line}{e}", path.display())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let label = match &record[0] {
            "0" => HAM,
            "1" => SPAM,
            other => bail!("{}: line {line}: the label is `{}`, expected 0 (ham) or 1 (spam)", path.display(), super::excerpt(other, 80)),
        };
        messages.push(Message { label, text: record[1].to_string() });
    }
    Ok(messages)
}

/// Reads `train.csv`, `validation.csv` and `test.csv` from `dir`.
pub fn read_splits(dir: &Path) -> Result<Splits<Vec<Message>>> {
    let [train, validation, test] = SPLIT_FILES.map(|name| dir.join(name));
    Ok(Splits {
        train: read_split_csv(&train)?,
        validation: read_split_csv(&validation)?,
        test: read_split_csv(&test)?,
    })
}

/// What [`prepare_spam`] did: the counts to print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpamReport {
    /// The zip that was read.
    pub zip: PathBuf,
    /// True when the zip was already in the output directory and not downloaded again.
    pub reused_download: bool,
    /// Non-blank lines in the collection.
    pub lines: usize,
    /// Lines skipped (no tab, unknown label, empty text).
    pub skipped: usize,
    /// The first few skipped lines (1-based) and why.
    pub skipped_lines: Vec<SkippedLine>,
    /// Lines with bytes that are not UTF-8 (kept, with U+FFFD).
    pub invalid_utf8_lines: usize,
    /// Valid messages by class, before balancing.
    pub ham: usize,
    pub spam: usize,
    /// Messages after balancing (half ham, half spam).
    pub balanced: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    /// Where the split files are.
    pub out_dir: PathBuf,
}

/// The whole flow: fetch the zip from `source` (URL or local path; a download is kept as
/// `out_dir/sms_spam_collection.zip` and reused), read it, balance, shuffle and split with `seed`,
/// and write the three split files into `out_dir` (all or none).
///
/// A downloaded file that turns out not to be a valid collection zip is deleted, so that the next
/// run downloads it again.
pub fn prepare_spam(source: &str, out_dir: &Path, seed: u64) -> Result<SpamReport> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let cache = out_dir.join(ZIP_FILE_NAME);
    let reused_download = download::local_path(source).is_none() && cache.is_file();
    let zip = download::fetch_cached(source, &cache)?;
    let collection = match read_collection_zip(&zip) {
        Ok(collection) => collection,
        Err(error) if zip == cache => {
            let _ = std::fs::remove_file(&cache);
            let why = format!(
                "{source} did not give the SMS Spam Collection zip (the download was deleted; run again to retry)"
            );
            return Err(error.context(why));
        }
        Err(error) => return Err(error),
    };
    let spam = collection.messages.iter().filter(|m| m.label == SPAM).count();
    let ham = collection.messages.len() - spam;
    ensure!(ham > 0 && spam > 0, "{} has {ham} ham and {spam} spam messages: both classes are needed", zip.display());

    let splits = balance_and_split(collection.messages, seed);
    write_splits(out_dir, &splits)?;
    Ok(SpamReport {
        zip,
        reused_download,
        lines: collection.lines,
        skipped: collection.skipped,
        skipped_lines: collection.first_skipped,
        invalid_utf8_lines: collection.invalid_utf8_lines,
        ham,
        spam,
        balanced: 2 * ham.min(spam),
        train: splits.train.len(),
        validation: splits.validation.len(),
        test: splits.test.len(),
        out_dir: out_dir.to_path_buf(),
    })
}

/// Tokenised messages of one length, ready to batch: `token_ids[i]` has exactly `length` ids
/// (the text's tokens as the model's tokenizer encodes it, cut to `length`, then padded with the
/// tokenizer's pad: GPT-2's `<|endoftext|>` 50256, else its pad token or end of sequence) and
/// `labels[i]` is its class ([`HAM`] or [`SPAM`]). As a Burn [`Dataset`] its items are
/// `(token_ids, label)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpamDataset {
    pub token_ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    pub length: usize,
}

impl SpamDataset {
    /// The training set: every text tokenised once, padded to the longest one, or cut and padded
    /// to `max_length` when given (keeping the start, like the book's `encoded[:max_length]`).
    /// The length never exceeds `context_length` (the model's `n_positions`): longer texts are
    /// cut to it, and a `max_length` above it is an error.
    pub fn for_training(messages: &[Message], max_length: Option<usize>, context_length: usize, tokenizer: &Tokenizer) -> Result<Self> {
        ensure!(!messages.is_empty(), "there are no training messages");
        let encoded = encode_all(messages, tokenizer)?;
        let length = match max_length {
            Some(max) => {
                ensure!(max > 0, "max_length must be at least 1");
                ensure!(
                    max <= context_length,
                    "max_length {max} is longer than the model's context ({context_length} tokens)"
                );
                max
            }
            None => encoded.iter().map(Vec::len).max().unwrap_or(0).min(context_length),
        };
        Ok(Self::from_encoded(encoded, messages, length, tokenizer.pad_id()))
    }

    /// Tokenises and cuts/pads every text to exactly `length`: validation and test sets use the
    /// training set's `length`.
    pub fn with_length(messages: &[Message], length: usize, tokenizer: &Tokenizer) -> Result<Self> {
        Ok(Self::from_encoded(encode_all(messages, tokenizer)?, messages, length, tokenizer.pad_id()))
    }

    fn from_encoded(encoded: Vec<Vec<u32>>, messages: &[Message], length: usize, pad: u32) -> Self {
        let token_ids = encoded
            .into_iter()
            .map(|mut ids| {
                ids.resize(length, pad);
                ids
            })
            .collect();
        Self { token_ids, labels: messages.iter().map(|m| m.label).collect(), length }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Every text encoded with the tokenizer's defaults (Llama 3 starts with `<|begin_of_text|>`).
fn encode_all(messages: &[Message], tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    messages
        .par_iter()
        .enumerate()
        .map(|(i, m)| tokenizer.try_encode(&m.text).with_context(|| format!("tokenising message {i}")))
        .collect()
}

impl Splits<SpamDataset> {
    /// Tokenises the three splits: train as [`SpamDataset::for_training`], validation and test
    /// at the training length.
    pub fn tokenize(messages: &Splits<Vec<Message>>, max_length: Option<usize>, context_length: usize, tokenizer: &Tokenizer) -> Result<Self> {
        let train = SpamDataset::for_training(&messages.train, max_length, context_length, tokenizer)?;
        let length = train.length;
        Ok(Splits {
            validation: SpamDataset::with_length(&messages.validation, length, tokenizer)?,
            test: SpamDataset::with_length(&messages.test, length, tokenizer)?,
            train,
        })
    }
}

impl Dataset<(Vec<u32>, usize)> for SpamDataset {
    /// `(token_ids, label)`; panics when `index >= len()`, like Burn's `InMemDataset`.
    fn get(&self, index: usize) -> Result<(Vec<u32>, usize), DatasetError> {
        Ok((self.token_ids[index].clone(), self.labels[index]))
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}
