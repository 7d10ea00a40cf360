//! Token shards: 1-D `uint16` numpy `.npy` files (what build-nanogpt's `fineweb.py` writes and its
//! `DataLoaderLite` reads), or `uint32` ones for tokenizers of more than 65,536 tokens (Llama 3's
//! 128,256), and [`ShardLoader`], which cuts them into `[B, T]` batches.
//!
//! The `.npy` v1.0 layout: the magic `\x93NUMPY`, version bytes `1 0`, a little-endian `u16` header
//! length, then a Python dict literal `{'descr': '<u2', 'fortran_order': False, 'shape': (N,), }`
//! (`'<u4'` for `uint32`) padded with spaces and ended by `\n` so that the data starts at a
//! multiple of 64 bytes, then the N tokens, little-endian. [`write_tokens`] writes exactly the
//! bytes of `np.save`; [`TokenFile`] memory-maps a shard and checks its header.
//!
//! ```no_run
//! use pipelines::data::shards::{ShardLoader, Split};
//! # fn main() -> Result<(), pipelines::data::shards::ShardError> {
//! let mut train = ShardLoader::new("edu_fineweb10B".as_ref(), Split::Train, 16, 1024, 0, 1)?;
//! let batch = train.next_batch()?;          // inputs [16, 1024] and the next tokens as targets
//! let resume_at = train.state();            // store with the checkpoint; `restore` it later
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of every `.npy` file.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy's `ARRAY_ALIGN`: the data starts at a multiple of this.
const NPY_ALIGN: usize = 64;
/// numpy leaves room in the header for the length to grow to this many digits
/// (`GROWTH_AXIS_MAX_DIGITS`), so every 1-D header is the same size.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// How many tokens are converted to bytes at a time when writing.
const WRITE_CHUNK: usize = 1 << 16;

/// How a shard stores its tokens: numpy's `uint16` (`'<u2'`) or `uint32` (`'<u4'`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    #[default]
    Uint16,
    Uint32,
}

impl TokenType {
    /// The narrowest that holds every id of a vocabulary of `vocab_size` tokens.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 { Self::Uint16 } else { Self::Uint32 }
    }

    /// Bytes a token.
    pub fn width(self) -> usize {
        match self {
            Self::Uint16 => 2,
            Self::Uint32 => 4,
        }
    }

    /// numpy's name in a header.
    fn descr(self) -> &'static str {
        match self {
            Self::Uint16 => "<u2",
            Self::Uint32 => "<u4",
        }
    }
}

/// What can go wrong with shards. Every message names the file (or directory) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not a 1-D little-endian `uint16`/`uint32` `.npy` file, or cut short.
    #[error("{}: not a token shard: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("no {split} token shards (`*_{split}_*.npy`) in {}", dir.display())]
    NoShards { dir: PathBuf, split: Split },
    #[error(
        "{}: {tokens} tokens is too short for batches of {batch_size} x {seq_len} over {world_size} process(es): \
         a step needs {needed} tokens (B*T*world_size + 1)",
        path.display()
    )]
    TooShort { path: PathBuf, tokens: usize, needed: usize, batch_size: usize, seq_len: usize, world_size: usize },
    #[error("invalid loader settings: {0}")]
    Settings(String),
    #[error("cannot restore the loader position: {0}")]
    State(String),
}

pub type Result<T, E = ShardError> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io { path: path.to_path_buf(), source }
}

/// Which shards: build-nanogpt keeps shard 0 for validation and trains on the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The file name of shard `index`: `{prefix}_val_000000.npy` for shard 0, then
/// `{prefix}_train_{index:06}.npy` (as `fineweb.py` names them).
pub fn shard_file_name(prefix: &str, index: usize) -> String {
    let split = if index == 0 { Split::Val } else { Split::Train };
    format!("{prefix}_{split}_{index:06}.npy")
}

/// The `.npy` v1.0 header of a 1-D array of `len` tokens, byte for byte as `np.save` writes it
/// (numpy ≥ 1.x `_write_array_header` + `_wrap_header`).
pub fn npy_header(len: usize, token_type: TokenType) -> Vec<u8> {
    let shape = format!("({len},)");
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", token_type.descr());
    // Spare room so that the length could grow in place (numpy pads by the digits of the length).
    dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(len.to_string().len())));
    let prefix_len = NPY_MAGIC.len() + 2 + 2; // magic, version, u16 header length
    let text_len = dict.len() + 1; // + '\n'
    // Always at least one space: numpy pads a full 64 when the header happens to be aligned.
    let pad = NPY_ALIGN - (prefix_len + text_len) % NPY_ALIGN;
    let header_len = (text_len + pad) as u16;
    let mut out = Vec::with_capacity(prefix_len + text_len + pad);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// A shard written by [`write_tokens`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenShard {
    /// File size in bytes (header + 2 or 4 bytes a token).
    pub bytes: u64,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Writes `tokens` as a `.npy` file (the bytes of `np.save(path, np.array(tokens, dtype=np.uint16))`,
/// or `np.uint32`), atomically: a temporary file in the same directory, synced, then renamed over
/// `path`. A token that does not fit `token_type` is an error, and nothing is written.
pub fn write_tokens<T: Copy + Into<u32>>(path: &Path, tokens: &[T], token_type: TokenType) -> Result<WrittenShard> {
    if token_type == TokenType::Uint16
        && let Some(at) = tokens.iter().position(|&t| t.into() > u32::from(u16::MAX))
    {
        let reason = format!("token {at} is {}, which does not fit in uint16", tokens[at].into());
        return Err(ShardError::Format { path: path.to_path_buf(), reason });
    }
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    gpt::io::write_atomic_with(path, |tmp| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        let mut put = |chunk: &[u8], out: &mut BufWriter<File>| {
            hasher.update(chunk);
            bytes += chunk.len() as u64;
            out.write_all(chunk)
        };
        put(&npy_header(tokens.len(), token_type), &mut out)?;
        let mut buffer = Vec::with_capacity(token_type.width() * WRITE_CHUNK);
        for chunk in tokens.chunks(WRITE_CHUNK) {
            buffer.clear();
            match token_type {
                TokenType::Uint16 => buffer.extend(chunk.iter().flat_map(|&t| (t.into() as u16).to_le_bytes())),
                TokenType::Uint32 => buffer.extend(chunk.iter().flat_map(|&t| t.into().to_le_bytes())),
            }
            put(&buffer, &mut out)?;
        }
        out.flush() // write_atomic_with syncs the file before the rename
    })
    .map_err(|e| match e {
        gpt::GptError::Io { path, source } => ShardError::Io { path, source },
        other => ShardError::Io { path: path.to_path_buf(), source: std::io::Error::other(other.to_string()) },
    })?;
    Ok(WrittenShard { bytes, sha256: hex(&hasher.finalize()) })
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_error(path))?;
    Ok(hex(&hasher.finalize()))
}

/// A memory-mapped token shard with a checked header.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    len: usize,
    token_type: TokenType,
}

impl TokenFile {
    /// Maps `path` and checks that it is a 1-D little-endian `uint16` or `uint32` `.npy` file (v1,
    /// v2 or v3 header) holding exactly the tokens its header announces.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_error(path))?;
        let size = file.metadata().map_err(io_error(path))?.len();
        let bad = |reason: String| ShardError::Format { path: path.to_path_buf(), reason };
        if size < 10 {
            return Err(bad(format!("{size} bytes is too short for a .npy header")));
        }
        // SAFETY: the map is read-only; a shard rewritten under a running reader is the same hazard
        // as for numpy's own mmap mode. Our writers never modify a shard in place (they rename).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let (data_start, len, token_type) = parse_header(&mmap).map_err(bad)?;
        let data_bytes = token_type.width() as u64 * len as u64;
        let expected = data_start as u64 + data_bytes;
        if size < expected {
            return Err(bad(format!(
                "truncated: the header announces {len} tokens ({data_bytes} bytes of data) but only {} bytes follow it",
                size - data_start as u64
            )));
        }
        if size > expected {
            return Err(bad(format!("{} unexpected bytes after the {len} tokens the header announces", size - expected)));
        }
        Ok(Self { path: path.to_path_buf(), mmap, data_start, len, token_type })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn token_type(&self) -> TokenType {
        self.token_type
    }

    /// The token at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<u32> {
        (index < self.len).then(|| self.tokens(index..index + 1).next().unwrap_or_default())
    }

    /// The tokens in `range` (panics when it goes past the end, like slicing).
    pub fn tokens(&self, range: Range<usize>) -> impl ExactSizeIterator<Item = u32> + '_ {
        assert!(range.start <= range.end && range.end <= self.len, "token range {range:?} out of 0..{}", self.len);
        let width = self.token_type.width();
        self.mmap[self.data_start + width * range.start..self.data_start + width * range.end]
            .chunks_exact(width)
            .map(|bytes| match *bytes {
                [a, b] => u32::from(u16::from_le_bytes([a, b])),
                [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
                _ => unreachable!("chunks of the token width"),
            })
    }

    /// All tokens, copied.
    pub fn to_vec(&self) -> Vec<u32> {
        self.tokens(0..self.len).collect()
    }
}

/// Reads a whole shard into memory.
pub fn read_tokens(path: &Path) -> Result<Vec<u32>> {
    Ok(TokenFile::open(path)?.to_vec())
}

/// Checks a `.npy` header; returns (offset of the data, number of elements, their type).
fn parse_header(bytes: &[u8]) -> Result<(usize, usize, TokenType), String> {
    if !bytes.starts_with(NPY_MAGIC) {
        return Err("bad magic: a .npy file starts with \\x93NUMPY".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, prefix) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(format!("unsupported .npy version {major}.{minor}")),
    };
    let text = bytes.get(prefix..prefix + header_len).ok_or_else(|| format!("truncated header ({header_len} bytes announced)"))?;
    let text = std::str::from_utf8(text).map_err(|_| "the header is not text".to_string())?;
    let dict = PyDict::parse(text.trim_end()).map_err(|e| format!("unreadable header {:?}: {e}", text.trim_end()))?;
    let token_type = match dict.get("descr") {
        Some(PyValue::Str(d)) if d == "<u2" => TokenType::Uint16,
        Some(PyValue::Str(d)) if d == "<u4" => TokenType::Uint32,
        Some(PyValue::Str(d)) => return Err(format!("dtype is {d:?}, expected '<u2' or '<u4' (little-endian uint16 or uint32)")),
        _ => return Err("the header has no 'descr' string".into()),
    };
    match dict.get("fortran_order") {
        Some(PyValue::Bool(false)) => {}
        Some(PyValue::Bool(true)) => return Err("the array is in Fortran order (expected C order)".into()),
        _ => return Err("the header has no 'fortran_order' flag".into()),
    }
    let len = match dict.get("shape") {
        Some(PyValue::Tuple(shape)) if shape.len() == 1 => shape[0],
        Some(PyValue::Tuple(shape)) => return Err(format!("the array is {}-D (shape {shape:?}), expected 1-D", shape.len())),
        _ => return Err("the header has no 'shape' tuple".into()),
    };
    Ok((prefix + header_len, len, token_type))
}

/// The values a `.npy` header dict holds.
#[derive(Debug, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A Python dict literal of string keys, as `.npy` headers hold: `{'key': value, ...}` with
/// strings, `True`/`False` and tuples of integers as values.
struct PyDict(Vec<(String, PyValue)>);

impl PyDict {
    fn get(&self, key: &str) -> Option<&PyValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut p = Parser { rest: text };
        p.expect('{')?;
        let mut items = Vec::new();
        loop {
            if p.eat('}') {
                break;
            }
            let key = p.string()?;
            p.expect(':')?;
            let value = p.value()?;
            items.push((key, value));
            if !p.eat(',') {
                p.expect('}')?;
                break;
            }
        }
        if !p.rest.trim().is_empty() {
            return Err(format!("unexpected {:?} after the dict", p.rest.trim()));
        }
        Ok(Self(items))
    }
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected {c:?} at {:?}", self.rest)) }
    }

    fn string(&mut self) -> Result<String, String> {
        self.rest = self.rest.trim_start();
        let quote = self.rest.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or_else(|| format!("expected a string at {:?}", self.rest))?;
        let body = &self.rest[1..];
        let end = body.find(quote).ok_or("unterminated string")?;
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    fn value(&mut self) -> Result<PyValue, String> {
        self.rest = self.rest.trim_start();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(PyValue::Bool(value));
            }
        }
        if self.eat('(') {
            let mut items = Vec::new();
            loop {
                if self.eat(')') {
                    break;
                }
                let digits: &str = &self.rest[..self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len())];
                let n = digits.parse().map_err(|_| format!("expected a dimension at {:?}", self.rest))?;
                self.rest = &self.rest[digits.len()..];
                items.push(n);
                if !self.eat(',') {
                    self.expect(')')?;
                    break;
                }
            }
            return Ok(PyValue::Tuple(items));
        }
        Ok(PyValue::Str(self.string()?))
    }
}

/// The shards of one split in `dir`: `*_{split}_*.npy`, sorted by name.
pub fn find_shards(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let marker = format!("_{split}_");
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".npy") && n.contains(&marker) && !n.starts_with('.'))
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(ShardError::NoShards { dir: dir.to_path_buf(), split });
    }
    Ok(shards)
}

/// Where a [`ShardLoader`] is: the shard it reads and the offset of its next batch there.
/// Serialisable, so that a checkpoint can hold it and training resume on the very next batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub shard: usize,
    pub position: usize,
}

/// One batch, row-major `[batch_size, seq_len]`: `targets[i]` is the token after `inputs[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub inputs: Vec<u32>,
    pub targets: Vec<i64>,
    pub batch_size: usize,
    pub seq_len: usize,
}

/// build-nanogpt's `DataLoaderLite` over memory-mapped shards. Process `rank` of `world_size`
/// starts at token `B*T*rank` of the first shard and moves on by `B*T*world_size` after each
/// batch, so the processes read disjoint, interleaved batches. When the next step would not fit
/// (`position + B*T*world_size + 1 > len`) it goes to the next shard (after the last, back to the
/// first) and starts again at `B*T*rank`. It never ends: count steps (or epochs) outside.
#[derive(Debug)]
pub struct ShardLoader {
    shards: Vec<PathBuf>,
    lens: Vec<usize>,
    batch_size: usize,
    seq_len: usize,
    rank: usize,
    world_size: usize,
    current: usize,
    position: usize,
    tokens: TokenFile,
}

impl ShardLoader {
    /// A loader over `dir`'s `*_{split}_*.npy` shards (sorted by name).
    pub fn new(dir: &Path, split: Split, batch_size: usize, seq_len: usize, rank: usize, world_size: usize) -> Result<Self> {
        Self::from_files(find_shards(dir, split)?, batch_size, seq_len, rank, world_size)
    }

    /// A loader over these shards, in this order. Every shard is opened and checked now (header,
    /// size, at least `B*T*world_size + 1` tokens), so a bad one fails here and not mid-training.
    pub fn from_files(shards: Vec<PathBuf>, batch_size: usize, seq_len: usize, rank: usize, world_size: usize) -> Result<Self> {
        if batch_size == 0 || seq_len == 0 || world_size == 0 {
            return Err(ShardError::Settings(format!(
                "batch size ({batch_size}), sequence length ({seq_len}) and world size ({world_size}) must be positive"
            )));
        }
        if rank >= world_size {
            return Err(ShardError::Settings(format!("rank {rank} is not below the world size {world_size}")));
        }
        let Some(first) = shards.first() else {
            return Err(ShardError::Settings("no shards given".into()));
        };
        let needed = batch_size * seq_len * world_size + 1;
        let mut lens = Vec::with_capacity(shards.len());
        for path in &shards {
            let len = TokenFile::open(path)?.len();
            if len < needed {
                return Err(ShardError::TooShort { path: path.clone(), tokens: len, needed, batch_size, seq_len, world_size });
            }
            lens.push(len);
        }
        let tokens = TokenFile::open(first)?;
        let mut loader = Self { shards, lens, batch_size, seq_len, rank, world_size, current: 0, position: 0, tokens };
        loader.position = loader.start_position();
        Ok(loader)
    }

    /// Tokens one step takes over all processes (`B*T*world_size`).
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len * self.world_size
    }

    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }

    /// Tokens in all shards.
    pub fn total_tokens(&self) -> usize {
        self.lens.iter().sum()
    }

    fn start_position(&self) -> usize {
        self.batch_size * self.seq_len * self.rank
    }

    /// Back to the start of the first shard.
    pub fn reset(&mut self) -> Result<()> {
        self.load_shard(0)?;
        self.position = self.start_position();
        Ok(())
    }

    fn load_shard(&mut self, index: usize) -> Result<()> {
        if index != self.current {
            let tokens = TokenFile::open(&self.shards[index])?;
            if tokens.len() != self.lens[index] {
                return Err(ShardError::Format {
                    path: self.shards[index].clone(),
                    reason: format!("it changed while in use ({} tokens, {} before)", tokens.len(), self.lens[index]),
                });
            }
            self.tokens = tokens;
            self.current = index;
        }
        Ok(())
    }

    /// The next `[B, T]` inputs and their targets (the same tokens shifted by one).
    pub fn next_batch(&mut self) -> Result<TokenBatch> {
        let n = self.batch_size * self.seq_len;
        let mut inputs = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        let mut window = self.tokens.tokens(self.position..self.position + n + 1);
        let mut previous = window.next().unwrap_or_default();
        for token in window {
            inputs.push(previous);
            targets.push(i64::from(token));
            previous = token;
        }
        self.position += self.tokens_per_step();
        if self.position + self.tokens_per_step() + 1 > self.tokens.len() {
            self.load_shard((self.current + 1) % self.shards.len())?;
            self.position = self.start_position();
        }
        Ok(TokenBatch { inputs, targets, batch_size: self.batch_size, seq_len: self.seq_len })
    }

    /// Where the next batch comes from.
    pub fn state(&self) -> LoaderState {
        LoaderState { shard: self.current, position: self.position }
    }

    /// Continues from a [`state`](Self::state) taken earlier (same shards and settings).
    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        let Some(&len) = self.lens.get(state.shard) else {
            return Err(ShardError::State(format!("shard {} does not exist (there are {})", state.shard, self.shards.len())));
        };
        let batch = self.batch_size * self.seq_len;
        if state.position + batch + 1 > len || !state.position.is_multiple_of(batch) {
            return Err(ShardError::State(format!(
                "position {} is not the start of a {}-token batch within the {len} tokens of {}",
                state.position,
                batch,
                self.shards[state.shard].display()
            )));
        }
        self.load_shard(state.shard)?;
        self.position = state.position;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parser_reads_numpy_headers_and_rejects_others() {
        let h = npy_header(5, TokenType::Uint16);
        assert_eq!(parse_header(&h), Ok((128, 5, TokenType::Uint16)));
        let h = npy_header(5, TokenType::Uint32);
        assert_eq!(parse_header(&h), Ok((128, 5, TokenType::Uint32)));
        let dict = PyDict::parse("{'descr': '<u2', 'fortran_order': False, 'shape': (3, 4), }").unwrap();
        assert_eq!(dict.get("shape"), Some(&PyValue::Tuple(vec![3, 4])));
        assert_eq!(PyDict::parse("{'shape': ()}").unwrap().get("shape"), Some(&PyValue::Tuple(vec![])));
        assert!(PyDict::parse("{'shape': (3,) ").is_err());
    }
}
