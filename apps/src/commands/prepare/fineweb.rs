//! `llmfs prepare fineweb`: FineWeb-Edu (or local parquet files) → token shards (GPT-2's tokens,
//! or another model's with `--tokenizer`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use pipelines::data::fineweb::{self, PrepareOptions, PrepareReport, Source};

#[derive(clap::Args, Debug)]
pub struct FinewebArgs {
    /// Output directory for the shards and fineweb_manifest.json
    #[arg(long)]
    pub out: PathBuf,
    /// A local data file, or a directory of them (read in name order), instead of the hub:
    /// parquet (streamed), JSONL, JSON, CSV, TSV (their --text-column) or .txt (one document each)
    #[arg(long, visible_alias = "data")]
    pub input: Option<PathBuf>,
    /// Hugging Face data set repo
    #[arg(long, default_value = fineweb::DEFAULT_DATASET)]
    pub dataset: String,
    /// Data set config: sample-10BT reads the parquet files under sample/10BT/
    #[arg(long, default_value = fineweb::DEFAULT_CONFIG)]
    pub config: String,
    /// Branch, tag or commit of the data set repo (a resumed run keeps the commit it started with)
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Whose tokens: gpt2 (build-nanogpt's shards), or a model (hub id, directory, run) whose
    /// tokenizer to use, to pretrain that model family (uint32 shards past 65,536 tokens)
    #[arg(long, default_value = "gpt2")]
    pub tokenizer: String,
    /// The string column that holds the documents
    #[arg(long, default_value = fineweb::TEXT_COLUMN)]
    pub text_column: String,
    /// Tokens per shard
    #[arg(long, default_value_t = fineweb::DEFAULT_SHARD_SIZE)]
    pub shard_size: usize,
    /// Tokeniser threads (default: all cores)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stop after this many documents
    #[arg(long)]
    pub max_docs: Option<u64>,
    /// Stop after the document that brings the total to this many tokens
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Delete the directory's shards and start over when its manifest has other settings
    #[arg(long)]
    pub force: bool,
    /// Also print the report as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FinewebArgs) -> Result<()> {
    anyhow::ensure!(args.workers != Some(0), "--workers must be at least 1");
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let source = match &args.input {
        Some(path) => Source::Local(path.clone()),
        None => Source::Hub {
            dataset: args.dataset.clone(),
            config: args.config.clone(),
            options: gpt::io::HubOptions { revision: args.revision.clone(), ..gpt::io::HubOptions::from_env() },
        },
    };
    let tokenizer = pipelines::runs::ModelRef::tokenizer_named(&args.tokenizer).with_context(|| format!("--tokenizer {}", args.tokenizer))?;
    // A directory is recorded absolute, so that `pretrain` finds it from anywhere.
    let name = match std::path::Path::new(&args.tokenizer).canonicalize() {
        Ok(dir) if dir.is_dir() => dir.to_string_lossy().into_owned(),
        _ => args.tokenizer.clone(),
    };
    let options = PrepareOptions {
        tokenizer: (name, tokenizer),
        text_column: args.text_column.clone(),
        shard_size: args.shard_size,
        max_docs: args.max_docs,
        max_tokens: args.max_tokens,
        workers: args.workers,
        force: args.force,
        progress,
    };
    let report = fineweb::prepare_fineweb(&source, &args.out, &options)
        .with_context(|| format!("cannot prepare token shards in {}", args.out.display()))?;
    print_fineweb_report(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn print_fineweb_report(report: &PrepareReport) {
    let dir = report.out_dir.display();
    if report.already_complete {
        eprintln!("{dir} is already complete: {} shards, {} tokens, {} documents", report.shards.len(), report.tokens, report.documents);
        return;
    }
    if report.reused_shards > 0 {
        eprintln!("kept {} finished shards of an earlier run", report.reused_shards);
    }
    if !report.removed_files.is_empty() {
        eprintln!("removed stale files: {}", report.removed_files.join(", "));
    }
    eprintln!(
        "{} shards ({} written now) with {} tokens from {} documents in {dir}",
        report.shards.len(),
        report.written_shards,
        report.tokens,
        report.documents
    );
    eprintln!(
        "tokenised {} tokens in {:.1} s: {:.0} tokens/s with {} workers",
        report.tokens_processed, report.seconds, report.tokens_per_second, report.workers
    );
}
