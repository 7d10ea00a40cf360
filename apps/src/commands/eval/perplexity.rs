//! `llmfs eval perplexity --model M --data SOURCE`: token-level perplexity and bits per byte of a
//! text, by Hugging Face's strided sliding window (pipelines::eval::perplexity).
//!
//! The text is a `.txt` file (one document), the records of a data file, directory or `hf:` source
//! (the `--text-column` of every record, joined with "\n\n" as HF's wikitext example joins its rows),
//! or a directory of `.npy` GPT-2 token shards (the tokens as they are).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use gpt::Tokenizer;
use gpt::io::HubOptions;
use gpt::models::CausalLm;
use pipelines::data::records::is_data_file;
use pipelines::data::shards::read_tokens;
use pipelines::data::source::DataSource;
use pipelines::eval::perplexity::{Settings, default_batch_size, evaluate, windows};
use pipelines::runs::ModelRef;
use serde_json::{Value, json};

use crate::progress::counting_bar;
use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

/// What separates the documents of a data source in the evaluated text.
const DOCUMENT_SEPARATOR: &str = "\n\n";

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The text: a .txt file; a .csv / .tsv / .jsonl / .json / .parquet file, a directory of split
    /// files or hf:owner/name[:config][@split] (their `test` split unless @split names one; the
    /// documents joined with blank lines); or a directory of .npy GPT-2 token shards (its val
    /// shards when it has some, else all)
    #[arg(long)]
    pub data: String,
    /// The records' column holding the text
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Tokens per window (default: the model's context length)
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Tokens between the starts of two windows (default: --seq-len, windows that do not overlap);
    /// a smaller stride gives every scored token at least seq_len - stride tokens of context
    #[arg(long)]
    pub stride: Option<usize>,
    /// Windows per forward pass (default: 1 on the CPU, 4 on a GPU); the result does not depend on it
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Print {"tokens","nll","perplexity","bits_per_byte"} as the last line of stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The evaluated text as token ids, with its size in UTF-8 bytes.
struct Corpus {
    ids: Vec<u32>,
    bytes: usize,
    /// What it was read from, for the summary.
    what: String,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    ensure!(args.batch_size != Some(0), "--batch-size must be at least 1");
    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    // The text first: a bad --data fails before a model download.
    let corpus = read_corpus(&args.data, &args.text_column, &model_ref.tokenizer()?, &args.model)?;
    let load_start = Instant::now();
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    let parameters = gpt::io::parameter_counts(&model).1;
    eprintln!("loaded {} ({parameters} parameters) on {device:?} in {:.1}s", args.model, load_start.elapsed().as_secs_f64());

    let context = model.context_length();
    let seq_len = args.seq_len.unwrap_or(context);
    ensure!(seq_len <= context, "--seq-len {seq_len} is more than the context of {} ({context} tokens)", args.model);
    let settings = Settings::new(seq_len, args.stride.unwrap_or(seq_len), args.batch_size.unwrap_or_else(|| default_batch_size(&device)));
    let count = windows(corpus.ids.len(), settings.seq_len, settings.stride).map_err(|e| anyhow::anyhow!("--seq-len / --stride: {e}"))?.len();
    eprintln!(
        "{}: {} bytes, {} tokens; {count} windows of {} tokens every {}, {} per forward pass",
        corpus.what,
        corpus.bytes,
        corpus.ids.len(),
        settings.seq_len,
        settings.stride,
        settings.batch_size
    );

    let progress = counting_bar(count, "perplexity {pos}/{len} windows [{wide_bar}] {per_sec} eta {eta}");
    let start = Instant::now();
    let result = evaluate(&model, &corpus.ids, settings, |done| progress.set_position(done as u64))
        .with_context(|| format!("evaluating {} on {}", args.model, args.data))?;
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let bits_per_byte = result.bits_per_byte(corpus.bytes);
    eprintln!(
        "perplexity {:.4} (mean nll {:.4} nats over {} scored tokens), {bits_per_byte:.4} bits per byte, in {seconds:.1}s ({:.0} tokens/s)",
        result.perplexity(),
        result.mean_nll(),
        result.tokens,
        corpus.ids.len() as f64 / seconds.max(1e-9)
    );
    if args.json {
        println!("{}", json!({ "tokens": result.tokens, "nll": result.nll, "perplexity": result.perplexity(), "bits_per_byte": bits_per_byte }));
    }
    Ok(())
}

/// Reads `data` as the model's token ids: a `.txt` file, a directory of token shards, or a data
/// source's records.
fn read_corpus(data: &str, column: &str, tokenizer: &Tokenizer, model: &str) -> Result<Corpus> {
    let path = Path::new(data);
    let encode = |text: String, what: String| -> Result<Corpus> {
        ensure!(!text.is_empty(), "{what} holds no text");
        // With the tokenizer's defaults, as HF's `tokenizer(text)`: Llama 3 starts with <|begin_of_text|>.
        let ids = tokenizer.try_encode(&text).with_context(|| format!("tokenizing {what}"))?;
        Ok(Corpus { ids, bytes: text.len(), what })
    };
    if !data.starts_with("hf:") && path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {data} as UTF-8 text"))?;
        return encode(text, data.to_string());
    }
    if path.is_dir() {
        let shards = npy_files(path)?;
        if !shards.is_empty() {
            return read_shards(path, &shards, tokenizer, model);
        }
    }
    ensure!(
        data.starts_with("hf:") || !path.is_file() || is_data_file(path),
        "{data}: expected a .txt file, a .csv / .tsv / .jsonl / .json / .parquet file, a directory of split files or of .npy token shards, or hf:owner/name"
    );
    let source = DataSource::open(data, &HubOptions::from_env())?;
    let split = source.main_split("test")?;
    let records = source.read(&split, Some(&[column.to_string()]))?;
    let mut documents = Vec::with_capacity(records.len());
    for record in &records {
        match record.object()?.get(column) {
            Some(Value::String(text)) => documents.push(text.as_str()),
            Some(other) => bail!("{}: `{column}` is not a string: {other}", record.location()),
            None => bail!("{}: no `{column}` column (choose one with --text-column)", record.location()),
        }
    }
    let label = source.split_label(&split);
    ensure!(!documents.is_empty(), "{label} holds no records");
    let what = format!("{label}: {} documents joined with blank lines", documents.len());
    encode(documents.join(DOCUMENT_SEPARATOR), what)
}

/// The `.npy` files of `dir`, sorted by name: only the val shards (`*_val_*.npy`, build-nanogpt's
/// held-out shard 0) when there are some, as a prepared FineWeb directory's train shards are for training.
fn npy_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_file() && name.ends_with(".npy") && !name.starts_with('.') {
            files.push(path);
        }
    }
    files.sort();
    if files.iter().any(|p| p.to_string_lossy().contains("_val_")) {
        files.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("_val_")));
    }
    Ok(files)
}

/// Token shards as they are, concatenated; their bytes are those of the decoded tokens. They must
/// hold the ids of the model's tokenizer (their manifest's fingerprint; GPT-2's without one).
fn read_shards(dir: &Path, shards: &[std::path::PathBuf], tokenizer: &Tokenizer, model: &str) -> Result<Corpus> {
    let (shards_tokenizer, fingerprint) = pipelines::data::fineweb::shards_tokenizer(dir)?;
    ensure!(
        pipelines::data::fineweb::tokenizer_fingerprint(tokenizer) == fingerprint,
        "{}: the token shards hold ids of {shards_tokenizer}'s tokenizer, and {model} has another",
        dir.display()
    );
    let mut ids = Vec::new();
    for shard in shards {
        ids.extend(read_tokens(shard).with_context(|| format!("reading the token shard {}", shard.display()))?);
    }
    ensure!(!ids.is_empty(), "{}: the token shards hold no tokens", dir.display());
    // The documents' own bytes: the token `prepare fineweb` starts each document with (GPT-2's
    // <|endoftext|>, Llama 3's <|begin_of_text|>) is not part of their text.
    let start = tokenizer.start_id();
    let text: Vec<u32> = ids.iter().copied().filter(|&id| id != start).collect();
    let bytes = tokenizer.decode_bytes(&text).with_context(|| format!("decoding the tokens of {}", dir.display()))?.len();
    let names: Vec<String> = shards.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    Ok(Corpus { ids, bytes, what: format!("{} ({})", dir.display(), names.join(", ")) })
}
