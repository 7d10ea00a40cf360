//! FineWeb-Edu → token shards, as build-nanogpt's `fineweb.py` makes them, byte for byte with
//! GPT-2's tokenizer (the default); with a Llama-family model's (`--tokenizer MODEL`), the same
//! shards of its ids, `uint32` where its vocabulary needs more than 16 bits.
//!
//! 1. The documents: the parquet files of a Hugging Face data set config (by default
//!    `HuggingFaceFW/fineweb-edu`, `sample-10BT` = the files under `sample/10BT/`), downloaded one
//!    at a time into the HF cache through hf-hub, or local files ([`local_input_files`]: parquet,
//!    JSONL, JSON, CSV, TSV, `.txt`); files in name order, rows in file order, column `text` (or
//!    another: `PrepareOptions::text_column`). Parquet record batches are streamed: the data set
//!    is never in memory; the other formats are read a whole file at a time.
//! 2. Each document becomes `[50256] + encode_ordinary(text)` (GPT-2 BPE), tokenised in parallel
//!    (rayon), in document order; with another tokenizer, its beginning-of-sequence token (else its
//!    end of text) takes 50256's place.
//! 3. The tokens fill shards of `shard_size` tokens exactly as `fineweb.py` fills them: a document
//!    that fits (`token_count + len(tokens) < shard_size`) is appended; otherwise its first tokens
//!    complete the shard, which is written, and the rest starts the next one; what is left at the
//!    end is a last, shorter shard. Shard 0 is `edufineweb_val_000000.npy`, then
//!    `edufineweb_train_000001.npy`, ... (`.npy`, `<u2`, see [`crate::data::shards`]). In effect,
//!    shard k holds tokens `[k*S, (k+1)*S)` of all documents' tokens in a row.
//!
//! A manifest (`fineweb_manifest.json`) records the settings (the tokenizer, and a fingerprint of
//! its ids that `pretrain` checks a model's tokenizer against), every finished shard (tokens,
//! sha256, and where in the input the next shard starts), and whether the run finished. A rerun
//! with the same settings keeps the finished full shards and goes on from the last one, so an
//! interrupted run resumes, a finished one is not redone, and a small `--max-docs` run can be
//! extended later. Other settings are an error unless `force` (then it starts over).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use arrow_array::{Array, ArrayRef};
use gpt::io::HubOptions;
use gpt::io::hub::hub_error;
use gpt::Tokenizer;
use hf_hub::api::sync::ApiRepo;
use hf_hub::{Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::parquet_file::{self, Texts};
use crate::data::records::{self, read_records};
use crate::data::shards::{self, TokenType, npy_header, shard_file_name, write_tokens};

/// The data set `fineweb.py` reads.
pub const DEFAULT_DATASET: &str = "HuggingFaceFW/fineweb-edu";
/// Its 10-billion-token sample (`remote_name` in `fineweb.py`).
pub const DEFAULT_CONFIG: &str = "sample-10BT";
/// Tokens per shard (`shard_size = int(1e8)`).
pub const DEFAULT_SHARD_SIZE: usize = 100_000_000;
/// Shard names start with this.
pub const SHARD_PREFIX: &str = "edufineweb";
/// The manifest in the output directory.
pub const MANIFEST_FILE: &str = "fineweb_manifest.json";
/// The parquet column holding the documents.
pub const TEXT_COLUMN: &str = "text";

fn default_text_column() -> String {
    TEXT_COLUMN.into()
}
/// Rows a record batch holds: the unit of parallel tokenisation.
const BATCH_ROWS: usize = 1024;
/// Record batches read ahead of the tokeniser.
const READ_AHEAD: usize = 4;
const MANIFEST_FORMAT: u32 = 1;

/// Where the documents come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A data file, or a directory whose data files are read in name order ([`local_input_files`]).
    Local(PathBuf),
    /// A data set on the Hugging Face hub: the parquet files of `config` (see [`config_folder`]),
    /// in name order, downloaded into the HF cache one by one.
    Hub { dataset: String, config: String, options: HubOptions },
}

/// How to prepare.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Tokens per shard.
    pub shard_size: usize,
    /// Stop after this many documents (counted from the start of the input).
    pub max_docs: Option<u64>,
    /// Stop after the document that brings the total to at least this many tokens (whole
    /// documents only, so the result is what `fineweb.py` makes of the same documents).
    pub max_tokens: Option<u64>,
    /// Tokeniser threads; `None` = all cores (or `RAYON_NUM_THREADS`).
    pub workers: Option<usize>,
    /// Start over (deleting this directory's shards) when the manifest has other settings.
    pub force: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The tokenizer, and how the manifest names it (`gpt2`, a hub id, a model directory).
    pub tokenizer: (String, Tokenizer),
    /// The string column that holds the documents.
    pub text_column: String,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        let tokenizer = ("gpt2".into(), Tokenizer::gpt2());
        Self { shard_size: DEFAULT_SHARD_SIZE, max_docs: None, max_tokens: None, workers: None, force: false, progress: false, tokenizer, text_column: default_text_column() }
    }
}

/// Whether two tokenizers give the same ids, in 16 hex digits: a hash of the vocabulary's size,
/// the token that starts each document, and the ids of a text with words, digits, accents, CJK,
/// an emoji and code. `pretrain` refuses a model whose tokenizer's differs from its shards'.
pub fn tokenizer_fingerprint(tokenizer: &Tokenizer) -> String {
    const PROBE: &str = "The quick brown fox jumps over the lazy dog. 1234567890 Ünïcödé ñ 你好，世界 🤖\n\tdef f(x):\n        return x ** 2  # code";
    let mut hasher = Sha256::new();
    hasher.update((tokenizer.vocab_size() as u64).to_le_bytes());
    hasher.update(tokenizer.start_id().to_le_bytes());
    for id in tokenizer.encode_ordinary(PROBE) {
        hasher.update(id.to_le_bytes());
    }
    shards::hex(&hasher.finalize()[..8])
}

/// Whose ids the shards in `dir` hold: their tokenizer's name and [`tokenizer_fingerprint`], from
/// their manifest; a directory without one holds build-nanogpt's shards, of GPT-2's ids.
pub fn shards_tokenizer(dir: &Path) -> Result<(String, String)> {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return Ok(("gpt2".into(), gpt2_fingerprint()));
    }
    let settings = Manifest::load(&path)?.settings;
    Ok((settings.tokenizer, settings.tokenizer_fingerprint))
}

/// GPT-2's fingerprint: the tokenizer of a manifest written before manifests recorded one.
fn gpt2_fingerprint() -> String {
    tokenizer_fingerprint(&Tokenizer::gpt2())
}

/// What decides the bytes of the shards. A rerun must have the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub tokenizer: String,
    /// [`tokenizer_fingerprint`] of the tokenizer.
    #[serde(default = "gpt2_fingerprint")]
    pub tokenizer_fingerprint: String,
    #[serde(default)]
    pub token_type: TokenType,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    pub prefix: String,
    pub shard_size: usize,
    pub source: SourceRecord,
    /// The input files in reading order (paths relative to the input directory or repo).
    pub inputs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceRecord {
    /// Where the files were (informative: a moved directory with the same files is the same input).
    Local { path: PathBuf },
    /// The revision is the commit the first run listed; later runs download from that commit.
    Hub { dataset: String, config: String, revision: String },
}

impl Settings {
    /// Why `self` (the manifest's) and `other` (this run's) would make different shards, if they would.
    fn difference(&self, other: &Settings) -> Option<String> {
        // A tokenizer is what its ids are: the same one from a moved directory makes the same shards.
        let what = if self.tokenizer_fingerprint != other.tokenizer_fingerprint {
            format!("tokenizer {} vs {}", self.tokenizer, other.tokenizer)
        } else if self.text_column != other.text_column {
            format!("text column {} vs {}", self.text_column, other.text_column)
        } else if self.prefix != other.prefix {
            format!("prefix {} vs {}", self.prefix, other.prefix)
        } else if self.shard_size != other.shard_size {
            format!("shard size {} vs {}", self.shard_size, other.shard_size)
        } else if !same_source(&self.source, &other.source) {
            format!("source {} vs {}", describe_source(&self.source), describe_source(&other.source))
        } else if self.inputs != other.inputs {
            format!("input files [{}] vs [{}]", self.inputs.join(", "), other.inputs.join(", "))
        } else {
            return None;
        };
        Some(what)
    }
}

fn same_source(a: &SourceRecord, b: &SourceRecord) -> bool {
    match (a, b) {
        (SourceRecord::Local { .. }, SourceRecord::Local { .. }) => true,
        (SourceRecord::Hub { dataset: d1, config: c1, .. }, SourceRecord::Hub { dataset: d2, config: c2, .. }) => d1 == d2 && c1 == c2,
        _ => false,
    }
}

fn describe_source(source: &SourceRecord) -> String {
    match source {
        SourceRecord::Local { path } => format!("local files ({})", path.display()),
        SourceRecord::Hub { dataset, config, revision } => format!("hub {dataset} {config} @ {revision}"),
    }
}

/// The document limits of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_docs: Option<u64>,
    pub max_tokens: Option<u64>,
}

/// A place in the input: document `documents` (counted from the start), which is row `row` of
/// input file `file`, of which the first `offset` tokens are already in a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub documents: u64,
    pub file: usize,
    pub row: u64,
    pub offset: u64,
}

impl Position {
    fn next_document(self) -> Self {
        Self { documents: self.documents + 1, file: self.file, row: self.row + 1, offset: 0 }
    }

    /// Documents with at least one token before this position.
    fn documents_started(self) -> u64 {
        self.documents + u64::from(self.offset > 0)
    }
}

/// A written shard, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub name: String,
    pub tokens: usize,
    pub bytes: u64,
    pub sha256: String,
    /// Where the next shard's first token comes from.
    pub end: Position,
}

/// Why the run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfInput,
    MaxDocs,
    MaxTokens,
}

/// `fineweb_manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub settings: Settings,
    pub limits: Limits,
    /// All shards of the run are written (the last one may be shorter).
    pub finished: bool,
    pub stop: Option<StopReason>,
    /// Documents with tokens in the shards.
    pub documents: u64,
    /// Tokens in the shards.
    pub tokens: u64,
    pub shards: Vec<ShardRecord>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid fineweb manifest", path.display()))?;
        ensure!(
            manifest.format == MANIFEST_FORMAT,
            "{}: manifest format {} (this llmfs reads format {MANIFEST_FORMAT})",
            path.display(),
            manifest.format
        );
        Ok(manifest)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        gpt::io::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct PrepareReport {
    pub out_dir: PathBuf,
    pub manifest: PathBuf,
    /// All shards in the directory now, in order.
    pub shards: Vec<ShardRecord>,
    /// Documents with tokens in the shards.
    pub documents: u64,
    /// Tokens in the shards.
    pub tokens: u64,
    /// Shards kept from an earlier run.
    pub reused_shards: usize,
    /// Shards written by this run.
    pub written_shards: usize,
    /// Shard files of an earlier run deleted because this run ends before them.
    pub removed_files: Vec<String>,
    /// An earlier run had done exactly this: nothing was read.
    pub already_complete: bool,
    pub stop: Option<StopReason>,
    /// Tokens this run produced (whole documents, including the part of a resumed document
    /// that an earlier shard holds) and the wall time of the whole run.
    pub tokens_processed: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub workers: usize,
}

/// Prepares shards of `source` in `out_dir` (created). See the module docs.
pub fn prepare_fineweb(source: &Source, out_dir: &Path, options: &PrepareOptions) -> Result<PrepareReport> {
    let started = Instant::now();
    ensure!(options.shard_size > 0, "the shard size must be positive");
    ensure!(options.shard_size <= u32::MAX as usize, "shard size {} is too large", options.shard_size);
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let manifest_path = out_dir.join(MANIFEST_FILE);
    let previous = manifest_path.is_file().then(|| Manifest::load(&manifest_path)).transpose()?;
    let pinned_revision = match previous.as_ref().map(|m| &m.settings.source) {
        Some(SourceRecord::Hub { revision, .. }) if !options.force => Some(revision.clone()),
        _ => None,
    };
    let inputs = Inputs::open(source, pinned_revision.as_deref())?;
    let (tokenizer_name, tokenizer) = &options.tokenizer;
    let settings = Settings {
        tokenizer: tokenizer_name.clone(),
        tokenizer_fingerprint: tokenizer_fingerprint(tokenizer),
        token_type: TokenType::for_vocab(tokenizer.vocab_size()),
        text_column: options.text_column.clone(),
        prefix: SHARD_PREFIX.into(),
        shard_size: options.shard_size,
        source: inputs.record(),
        inputs: inputs.names.clone(),
    };
    let limits = Limits { max_docs: options.max_docs, max_tokens: options.max_tokens };
    let workers = options.workers.unwrap_or_else(rayon::current_num_threads).max(1);

    // What an earlier run left that this one can keep.
    let kept = match &previous {
        Some(previous) => match previous.settings.difference(&settings) {
            Some(difference) if !options.force => bail!(
                "{} was made with other settings ({difference}). Pass --force to delete its shards and start over, \
                 or choose another output directory",
                manifest_path.display()
            ),
            Some(_) => Vec::new(),
            None if options.force => Vec::new(),
            None => {
                if previous.finished && previous.limits == limits && all_present(out_dir, previous) {
                    return Ok(PrepareReport {
                        out_dir: out_dir.to_path_buf(),
                        manifest: manifest_path,
                        shards: previous.shards.clone(),
                        documents: previous.documents,
                        tokens: previous.tokens,
                        reused_shards: previous.shards.len(),
                        written_shards: 0,
                        removed_files: Vec::new(),
                        already_complete: true,
                        stop: previous.stop,
                        tokens_processed: 0,
                        seconds: started.elapsed().as_secs_f64(),
                        tokens_per_second: 0.0,
                        workers,
                    });
                }
                reusable_shards(out_dir, previous, limits)
            }
        },
        None => {
            let strays = shard_files_from(out_dir, 0)?;
            if !strays.is_empty() && !options.force {
                bail!(
                    "{} already holds token shards ({}) but no {MANIFEST_FILE}: pass --force to overwrite them, or \
                     choose another output directory",
                    out_dir.display(),
                    strays.join(", ")
                );
            }
            Vec::new()
        }
    };

    let reused_shards = kept.len();
    let start = kept.last().map(|s| s.end).unwrap_or_default();
    let mut filler = ShardFiller::new(out_dir, &manifest_path, settings, limits, kept, options.progress)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().context("cannot start the tokeniser threads")?;
    let (stop, end, tokens_processed) = pool.install(|| stream_documents(&inputs, &options.text_column, start, limits, tokenizer, &mut filler))?;
    let manifest = filler.finish(stop, end)?;
    // Shard files past the end of this run (an earlier, longer run; a crash before its manifest
    // was written) would be read by a loader as if they belonged here.
    let removed_files = shard_files_from(out_dir, manifest.shards.len())?;
    for name in &removed_files {
        std::fs::remove_file(out_dir.join(name)).with_context(|| format!("cannot remove the stale shard {name}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(PrepareReport {
        out_dir: out_dir.to_path_buf(),
        manifest: manifest_path,
        written_shards: manifest.shards.len() - reused_shards,
        shards: manifest.shards,
        documents: manifest.documents,
        tokens: manifest.tokens,
        reused_shards,
        removed_files,
        already_complete: false,
        stop: Some(stop),
        tokens_processed,
        seconds,
        tokens_per_second: tokens_processed as f64 / seconds.max(1e-9),
        workers,
    })
}

/// Whether every shard is on disk with the size and header its record says (the hash is not
/// recomputed: that would read every shard again; `sha256sum` against the manifest does it).
fn shard_present(out_dir: &Path, shard: &ShardRecord, token_type: TokenType) -> bool {
    let path = out_dir.join(&shard.name);
    let expected = (npy_header(shard.tokens, token_type).len() + token_type.width() * shard.tokens) as u64;
    std::fs::metadata(&path).is_ok_and(|m| m.len() == expected && shard.bytes == expected)
        && shards::TokenFile::open(&path).is_ok_and(|f| f.len() == shard.tokens)
}

fn all_present(out_dir: &Path, manifest: &Manifest) -> bool {
    manifest.shards.iter().all(|s| shard_present(out_dir, s, manifest.settings.token_type))
}

/// The earlier run's shards this run would write identically: the leading full shards that are
/// on disk and end within this run's limits.
fn reusable_shards(out_dir: &Path, previous: &Manifest, limits: Limits) -> Vec<ShardRecord> {
    let shard_size = previous.settings.shard_size;
    previous
        .shards
        .iter()
        .enumerate()
        .take_while(|(index, shard)| {
            shard.tokens == shard_size
                && limits.max_docs.is_none_or(|max| shard.end.documents_started() <= max)
                && limits.max_tokens.is_none_or(|max| ((index + 1) * shard_size) as u64 <= max)
                && shard_present(out_dir, shard, previous.settings.token_type)
        })
        .map(|(_, shard)| shard.clone())
        .collect()
}

/// Names of the files in `dir` named like shards (`edufineweb_{val,train}_NNNNNN.npy`) with an
/// index of at least `first`, and of temporary files a crashed write left, sorted.
fn shard_files_from(dir: &Path, first: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry.with_context(|| format!("cannot list {}", dir.display()))?.file_name().to_string_lossy().into_owned();
        let index = name
            .strip_suffix(".npy")
            .and_then(|stem| stem.rsplit_once('_'))
            .filter(|(_, digits)| digits.len() == 6)
            .and_then(|(_, digits)| digits.parse::<usize>().ok());
        let is_shard = index.is_some_and(|i| i >= first && name == shard_file_name(SHARD_PREFIX, i));
        let is_leftover = name.starts_with(&format!(".{SHARD_PREFIX}_")) && name.contains(".npy.tmp.");
        if is_shard || is_leftover {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The parquet files of a run, local or on the hub.
struct Inputs {
    /// Relative names (the manifest's `inputs`).
    names: Vec<String>,
    place: InputPlace,
}

enum InputPlace {
    Local { root: PathBuf, files: Vec<PathBuf> },
    Hub { dataset: String, config: String, revision: String, repo: Box<ApiRepo>, options: HubOptions },
}

impl Inputs {
    fn open(source: &Source, pinned_revision: Option<&str>) -> Result<Self> {
        match source {
            Source::Local(path) => {
                let files = local_input_files(path)?;
                let names = files
                    .iter()
                    .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                    .collect();
                Ok(Self { names, place: InputPlace::Local { root: path.clone(), files } })
            }
            Source::Hub { dataset, config, options } => {
                let (repo, revision, names) = list_hub_files(dataset, config, options, pinned_revision)?;
                let place = InputPlace::Hub {
                    dataset: dataset.clone(),
                    config: config.clone(),
                    revision,
                    repo: Box::new(repo),
                    options: options.clone(),
                };
                Ok(Self { names, place })
            }
        }
    }

    fn record(&self) -> SourceRecord {
        match &self.place {
            InputPlace::Local { root, .. } => SourceRecord::Local { path: root.clone() },
            InputPlace::Hub { dataset, config, revision, .. } => {
                SourceRecord::Hub { dataset: dataset.clone(), config: config.clone(), revision: revision.clone() }
            }
        }
    }

    /// The local path of input `index`, downloading it into the HF cache when needed.
    fn fetch(&self, index: usize) -> Result<PathBuf> {
        match &self.place {
            InputPlace::Local { files, .. } => Ok(files[index].clone()),
            InputPlace::Hub { dataset, repo, options, .. } => {
                let name = &self.names[index];
                gpt::io::hub::get_shared(repo, name).map_err(|e| anyhow!(hub_error(dataset, name, options, e)))
            }
        }
    }
}

/// A data file, or the data files directly in a directory, sorted by name: parquet (streamed),
/// JSONL, a JSON list, CSV, TSV (read whole, as `records` reads them) and plain text (a `.txt`
/// file is one document).
pub fn local_input_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the input {}", path.display()))?;
    if meta.is_file() {
        ensure!(is_input_file(path), "{}: not a data file this reads ({})", path.display(), INPUT_KINDS);
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_input_file(p) && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no data files ({INPUT_KINDS}) in {}", path.display());
    Ok(files)
}

const INPUT_KINDS: &str = "*.parquet, *.jsonl, *.json, *.csv, *.tsv, *.txt";

fn is_input_file(path: &Path) -> bool {
    records::is_data_file(path) || is_text_file(path)
}

fn is_text_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// The repo folder of a data set config: `sample-10BT` → `sample/10BT` (FineWeb-Edu's layout),
/// `CC-MAIN-2024-10` → `data/CC-MAIN-2024-10`, `default` → `data`; a name with a `/` is taken as
/// the folder itself.
pub fn config_folder(config: &str) -> String {
    let config = config.trim_matches('/');
    if config.contains('/') {
        return config.to_string();
    }
    if let Some(size) = config.strip_prefix("sample-") {
        return format!("sample/{size}");
    }
    if config == "default" { "data".to_string() } else { format!("data/{config}") }
}

/// Lists the config's parquet files with the hub's repo-info API (at `pinned_revision`, or the
/// configured revision), and returns a handle that downloads from the commit it listed.
fn list_hub_files(dataset: &str, config: &str, options: &HubOptions, pinned_revision: Option<&str>) -> Result<(ApiRepo, String, Vec<String>)> {
    if options.offline {
        let snapshots = options.cache_dir.join(Repo::new(dataset.to_string(), RepoType::Dataset).folder_name()).join("snapshots");
        bail!(
            "HF_HUB_OFFLINE is set, and listing the files of {dataset} needs the hub. Pass --input with the parquet \
             files instead (a downloaded copy is in {}/<commit>/{})",
            snapshots.display(),
            config_folder(config)
        );
    }
    let revision = pinned_revision.unwrap_or(&options.revision);
    let listing = gpt::io::hub::list_dataset(dataset, revision, options).map_err(|e| anyhow!(hub_error(dataset, "", options, e)))?;
    let folder = format!("{}/", config_folder(config));
    let files: Vec<String> = listing.files.into_iter().filter(|name| name.starts_with(&folder) && name.ends_with(".parquet")).collect();
    ensure!(
        !files.is_empty(),
        "the data set {dataset} (revision {}) has no parquet files under {folder} (is the config `{config}` right?)",
        listing.commit
    );
    Ok((listing.repo, listing.commit, files))
}

/// One record batch of documents.
struct TextBatch {
    file: usize,
    first_row: u64,
    first_document: u64,
    texts: ArrayRef,
}

/// Reads the documents from `start` on and feeds them, tokenised, to `filler`. Returns why it
/// stopped, the position after the last document, and the tokens it tokenised.
fn stream_documents(inputs: &Inputs, column: &str, start: Position, limits: Limits, tokenizer: &Tokenizer, filler: &mut ShardFiller) -> Result<(StopReason, Position, u64)> {
    let stop_reading = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel(READ_AHEAD);
        let reader = scope.spawn(|| read_batches(inputs, column, start, limits.max_docs, &stop_reading, sender));
        let result = tokenise_batches(inputs, column, start, limits, tokenizer, receiver, filler);
        stop_reading.store(true, Ordering::SeqCst);
        let read = reader.join().map_err(|_| anyhow!("the parquet reader thread panicked"))?;
        // The reader's own error explains a stop better than "the channel closed".
        read?;
        result
    })
}

/// The consuming side: tokenises each batch in parallel, then hands the documents to the shard
/// filler in order.
fn tokenise_batches(
    inputs: &Inputs,
    column: &str,
    start: Position,
    limits: Limits,
    tokenizer: &Tokenizer,
    receiver: Receiver<TextBatch>,
    filler: &mut ShardFiller,
) -> Result<(StopReason, Position, u64)> {
    let mut position = start;
    let mut processed = 0u64;
    if limits.max_docs.is_some_and(|max| position.documents >= max) {
        return Ok((StopReason::MaxDocs, position, processed));
    }
    for batch in receiver {
        let file_name = &inputs.names[batch.file];
        let texts = Texts::of(&batch.texts).with_context(|| format!("{file_name}: column `{column}`"))?;
        let documents: Vec<Vec<u32>> = (0..batch.texts.len())
            .into_par_iter()
            .map(|i| {
                let row = batch.first_row + i as u64;
                let text = texts.get(i).ok_or_else(|| anyhow!("{file_name}: row {row}: `{column}` is null"))?;
                encode_document(tokenizer, text).with_context(|| format!("{file_name}: row {row}"))
            })
            .collect::<Result<_>>()?;
        for (i, tokens) in documents.iter().enumerate() {
            let at = Position { documents: batch.first_document + i as u64, file: batch.file, row: batch.first_row + i as u64, offset: 0 };
            let skip = if at.documents == start.documents { start.offset } else { 0 };
            ensure!(
                skip <= tokens.len() as u64,
                "{file_name}: row {}: the manifest says {skip} of its tokens are in a shard, but it has only {} (did the input change?)",
                at.row,
                tokens.len()
            );
            filler.push(Position { offset: skip, ..at }, &tokens[skip as usize..])?;
            processed += tokens.len() as u64;
            position = at.next_document();
            if limits.max_docs.is_some_and(|max| position.documents >= max) {
                return Ok((StopReason::MaxDocs, position, processed));
            }
            if limits.max_tokens.is_some_and(|max| filler.total_tokens() >= max) {
                return Ok((StopReason::MaxTokens, position, processed));
            }
        }
    }
    Ok((StopReason::EndOfInput, position, processed))
}

/// `[50256] + encode_ordinary(text)` with GPT-2's tokenizer; another's starts with its
/// beginning-of-sequence token, or else its end of text (`Tokenizer::start_id`).
fn encode_document(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut tokens = Vec::with_capacity(text.len() / 4 + 2);
    tokens.push(tokenizer.start_id());
    tokenizer.try_encode_ordinary_into(text, &mut tokens)?;
    Ok(tokens)
}

/// The producing side (its own thread): fetches the input files in order from `start` on
/// (downloading each only when it is reached) and sends their `column` in record batches. Stops
/// early when the consumer is gone, `stop` is set, or `max_docs` rows have been sent.
fn read_batches(inputs: &Inputs, column: &str, start: Position, max_docs: Option<u64>, stop: &AtomicBool, sender: SyncSender<TextBatch>) -> Result<()> {
    let mut document = start.documents;
    for file in start.file..inputs.names.len() {
        if stop.load(Ordering::SeqCst) || max_docs.is_some_and(|max| document >= max) {
            return Ok(());
        }
        let path = inputs.fetch(file)?;
        let skip = if file == start.file { start.row } else { 0 };
        let mut sink = BatchSink { file, row: skip, document: &mut document, max_docs, stop, sender: &sender };
        let read = if is_parquet(&path) {
            parquet_file::guard(&path, || read_file_batches(&path, column, skip, &mut sink))?
        } else {
            let texts = read_whole_file(&path, column)?;
            send_texts(&texts, skip, &mut sink)
        };
        match read {
            ReadOutcome::Continue => {}
            ReadOutcome::Stop => return Ok(()),
        }
    }
    Ok(())
}

/// The documents of a file that is not parquet: a `.txt` file's whole text, else each record's
/// `column` (a record without it, or with something else than a string there, is an error naming it).
fn read_whole_file(path: &Path, column: &str) -> Result<Vec<String>> {
    if is_text_file(path) {
        return Ok(vec![std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?]);
    }
    read_records(path, Some(&[column.to_string()]))?
        .into_iter()
        .map(|record| match record.object()?.get(column) {
            Some(serde_json::Value::String(text)) => Ok(text.clone()),
            Some(other) => bail!("{}: `{column}` is {}, not a string", record.location(), super::json_kind(other)),
            None => bail!("{}: no `{column}`", record.location()),
        })
        .collect()
}

/// [`read_file_batches`] for documents already read: from row `skip` on, in batches.
fn send_texts(texts: &[String], skip: u64, sink: &mut BatchSink) -> ReadOutcome {
    for chunk in texts.get(skip as usize..).unwrap_or_default().chunks(BATCH_ROWS) {
        if let ReadOutcome::Stop = sink.send(std::sync::Arc::new(arrow_array::StringArray::from_iter_values(chunk))) {
            return ReadOutcome::Stop;
        }
    }
    ReadOutcome::Continue
}

/// Whether [`read_batches`] goes on with the next file.
enum ReadOutcome {
    Continue,
    Stop,
}

/// Where [`read_batches`] is in one file (its next row, the next document) and where its batches go.
struct BatchSink<'a> {
    file: usize,
    row: u64,
    document: &'a mut u64,
    max_docs: Option<u64>,
    stop: &'a AtomicBool,
    sender: &'a SyncSender<TextBatch>,
}

impl BatchSink<'_> {
    /// Sends the next rows' texts, cut where `max_docs` is reached; whether to go on.
    fn send(&mut self, mut texts: ArrayRef) -> ReadOutcome {
        if let Some(max) = self.max_docs {
            let room = max.saturating_sub(*self.document) as usize;
            if room < texts.len() {
                texts = texts.slice(0, room);
            }
        }
        let rows = texts.len() as u64;
        if rows > 0 && self.sender.send(TextBatch { file: self.file, first_row: self.row, first_document: *self.document, texts }).is_err() {
            return ReadOutcome::Stop; // the consumer stopped
        }
        self.row += rows;
        *self.document += rows;
        if self.max_docs.is_some_and(|max| *self.document >= max) || self.stop.load(Ordering::SeqCst) {
            return ReadOutcome::Stop;
        }
        ReadOutcome::Continue
    }
}

/// One parquet file of [`read_batches`]: its `column` from row `skip` on.
fn read_file_batches(path: &Path, column: &str, skip: u64, sink: &mut BatchSink) -> Result<ReadOutcome> {
    let context = || format!("cannot read {}", path.display());
    let builder = parquet_file::open(path)?;
    let mask = parquet_file::project(path, &builder, &[column])?;
    // Skip whole row groups without decoding them, then rows within the first one read.
    let mut groups = Vec::new();
    let mut first_row = 0u64;
    for (index, group) in builder.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows() as u64;
        if first_row.saturating_add(rows) <= skip && groups.is_empty() {
            first_row += rows;
        } else {
            groups.push(index);
        }
    }
    let within = (skip - first_row.min(skip)) as usize;
    sink.row = skip.max(first_row);
    let reader = builder.with_projection(mask).with_row_groups(groups).with_offset(within).with_batch_size(BATCH_ROWS).build().with_context(context)?;
    for batch in reader {
        let batch = batch.with_context(context)?;
        if let ReadOutcome::Stop = sink.send(batch.column(0).clone()) {
            return Ok(ReadOutcome::Stop);
        }
    }
    Ok(ReadOutcome::Continue)
}

/// `fineweb.py`'s shard buffer: fills shards in order, writes each full one (and finally the
/// rest), and keeps the manifest up to date after every shard.
struct ShardFiller {
    out_dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
    buffer: Vec<u32>,
    shard_size: usize,
    progress: ProgressBar,
}

impl ShardFiller {
    /// Starts after the `kept` shards of an earlier run; the manifest is rewritten at once, so
    /// that it never lists a shard this run is about to rewrite.
    fn new(out_dir: &Path, manifest_path: &Path, settings: Settings, limits: Limits, kept: Vec<ShardRecord>, progress: bool) -> Result<Self> {
        let shard_size = settings.shard_size;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            settings,
            limits,
            finished: false,
            stop: None,
            documents: kept.last().map(|s| s.end.documents_started()).unwrap_or(0),
            tokens: kept.iter().map(|s| s.tokens as u64).sum(),
            shards: kept,
        };
        manifest.save(manifest_path)?;
        let filler = Self {
            out_dir: out_dir.to_path_buf(),
            manifest_path: manifest_path.to_path_buf(),
            manifest,
            buffer: Vec::new(),
            shard_size,
            progress: if progress { ProgressBar::new(shard_size as u64) } else { ProgressBar::hidden() },
        };
        if let Ok(style) = ProgressStyle::with_template("{msg} {human_pos}/{human_len} tokens [{wide_bar}] {per_sec} eta {eta}") {
            filler.progress.set_style(style);
        }
        filler.progress.set_message(format!("shard {}", filler.manifest.shards.len()));
        Ok(filler)
    }

    /// Tokens in the shards written so far and in the buffer.
    fn total_tokens(&self) -> u64 {
        self.manifest.tokens + self.buffer.len() as u64
    }

    /// Adds the tokens of the document at `at` (its first `at.offset` tokens, already in a shard,
    /// are not in `tokens`).
    fn push(&mut self, at: Position, tokens: &[u32]) -> Result<()> {
        let mut rest = tokens;
        let mut offset = at.offset;
        loop {
            // fineweb.py: `if token_count + len(tokens) < shard_size`: append.
            if self.buffer.len() + rest.len() < self.shard_size {
                self.buffer.extend_from_slice(rest);
                self.progress.inc(rest.len() as u64);
                return Ok(());
            }
            // Else complete the shard with the first `remainder` tokens; the rest starts the next.
            // (fineweb.py copies the rest into the next shard unchecked, which fails for a document
            // longer than a whole shard; here it simply goes round again.)
            let remainder = self.shard_size - self.buffer.len();
            self.buffer.extend_from_slice(&rest[..remainder]);
            rest = &rest[remainder..];
            offset += remainder as u64;
            let end = if rest.is_empty() { at.next_document() } else { Position { offset, ..at } };
            self.write_shard(end)?;
        }
    }

    fn write_shard(&mut self, end: Position) -> Result<()> {
        let name = shard_file_name(&self.manifest.settings.prefix, self.manifest.shards.len());
        // The type fits every id of the tokenizer's vocabulary (fineweb.py asserts it for uint16).
        let written = write_tokens(&self.out_dir.join(&name), &self.buffer, self.manifest.settings.token_type)?;
        self.manifest.tokens += self.buffer.len() as u64;
        self.manifest.documents = end.documents_started();
        self.manifest.shards.push(ShardRecord { name: name.clone(), tokens: self.buffer.len(), bytes: written.bytes, sha256: written.sha256, end });
        self.manifest.save(&self.manifest_path)?;
        let line = format!("wrote {name} ({} tokens)", self.buffer.len());
        if self.progress.is_hidden() {
            eprintln!("{line}");
        } else {
            self.progress.println(line);
        }
        self.buffer.clear();
        self.progress.reset();
        self.progress.set_message(format!("shard {}", self.manifest.shards.len()));
        Ok(())
    }

    /// Writes what is left as the last shard and marks the manifest finished.
    fn finish(mut self, stop: StopReason, end: Position) -> Result<Manifest> {
        if !self.buffer.is_empty() {
            self.write_shard(end)?;
        }
        self.progress.finish_and_clear();
        self.manifest.finished = true;
        self.manifest.stop = Some(stop);
        self.manifest.documents = end.documents_started();
        self.manifest.save(&self.manifest_path)?;
        Ok(self.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_map_to_repo_folders() {
        assert_eq!(config_folder("sample-10BT"), "sample/10BT");
        assert_eq!(config_folder("sample-350BT"), "sample/350BT");
        assert_eq!(config_folder("CC-MAIN-2024-10"), "data/CC-MAIN-2024-10");
        assert_eq!(config_folder("default"), "data");
        assert_eq!(config_folder("sample/10BT/"), "sample/10BT");
    }
}
