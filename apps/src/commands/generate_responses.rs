//! `llmfs generate-responses --model M --data test.json --out test_responses.json`: a model's
//! responses to instruction records (the book's chapter 7 test-set responses) or to conversations
//! (each answered from before its last assistant turn, which is the reference), for `llmfs eval judge`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use gpt::generate::GenerateConfig;
use pipelines::runs::ModelRef;
use pipelines::data::instruction::DEFAULT_CACHE_DIR;
use pipelines::data::chat::ChatRendering;
use pipelines::data::conversation::InstructionData;
use pipelines::eval::responses::{
    DEFAULT_MAX_NEW_TOKENS, RESPONSES_FILE, generate_chat_completions, generate_completions, load_test_data, with_chat_responses, with_responses,
    write_responses,
};
use serde_json::json;

use crate::commands::generate::SamplingArgs;
use crate::commands::tokenize::read_template;
use crate::progress::counting_bar;
use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// Alpaca records or conversations (a file or URL), or a directory holding test.json or
    /// test.jsonl (or data/test.json[l], a run's test split)
    #[arg(long)]
    pub data: String,
    /// A Jinja2 chat template file to render conversations with instead of the model's
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Where to write the records plus `model_response` (default: test_responses.json, inside
    /// --model when that is a run directory)
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = DEFAULT_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Prompts generated together (one batch through the KV cache)
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Only the first N records
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where a --data URL is downloaded to
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    // Stops at the end of sequence; left padding (the default) batches prompts of any length.
    let config =
        GenerateConfig { sampling: args.sampling.sampling(), seed: args.runtime.seed, ..GenerateConfig::greedy(args.max_new_tokens) };
    config.sampling.validate()?;
    let (data_file, mut records) = load_test_data(&args.data, &args.cache_dir)?;
    if let Some(limit) = args.limit {
        records.truncate(limit);
    }
    ensure!(!records.is_empty(), "{} has no records", data_file.display());
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model));

    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    // The model's tokenizer encodes the prompts, decodes the responses and says where they end.
    let tokenizer = model_ref.tokenizer()?;
    let config = config.with_tokenizer(&tokenizer);
    eprintln!("{}: {} records from {}, {} at a time", args.model, records.len(), data_file.display(), args.batch_size);

    let progress = counting_bar(records.len(), "responses {pos}/{len} [{wide_bar}] eta {eta}");
    let start = Instant::now();
    let on_batch = |done: usize, _| progress.set_position(done as u64);
    let (responses, completions) = match &records {
        InstructionData::Alpaca(records) => {
            let completions = generate_completions(&model, records, &config, args.batch_size, on_batch)?;
            (with_responses(records, &completions), completions)
        }
        InstructionData::Chat(conversations) => {
            // Rendered as `finetune instruct` rendered them (same template choice).
            let template = args.chat_template.as_deref().map(|file| Ok::<_, anyhow::Error>((read_template(file, &tokenizer)?, file.display().to_string())));
            let rendering = ChatRendering::new(&tokenizer, template.transpose()?)?;
            let completions = generate_chat_completions(&model, conversations, &rendering, &config, args.batch_size, on_batch)?;
            (with_chat_responses(conversations, &completions), completions)
        }
    };
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let new_tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
    write_responses(&out, &responses)?;

    let tokens_per_s = new_tokens as f64 / seconds.max(1e-9);
    eprintln!("generated {new_tokens} tokens in {seconds:.1}s ({tokens_per_s:.1} tokens/s)");
    if args.json {
        println!(
            "{}",
            json!({ "out": out, "records": records.len(), "new_tokens": new_tokens, "seconds": seconds, "tokens_per_s": tokens_per_s })
        );
    } else {
        println!("wrote {} responses to {}", records.len(), out.display());
    }
    Ok(())
}

/// `RUN_DIR/test_responses.json` for a run directory (so that `eval judge` writes
/// `RUN_DIR/eval/judge.json` next to it), else `test_responses.json` here.
fn default_out(model: &str) -> PathBuf {
    match ModelRef::resolve(model).run {
        Some(run) => run.join(RESPONSES_FILE),
        None => PathBuf::from(RESPONSES_FILE),
    }
}
