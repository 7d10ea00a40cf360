//! `llmfs`: one command line for GPT-2 models on Burn. Human messages go to stderr; results (and
//! `--json` objects, one per line) to stdout.

mod chat_format;
mod commands;
mod monitor;
mod progress;
mod runtime;
mod serve;

gpt::use_mimalloc!();

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "llmfs", version, about = "GPT models from scratch in Rust, on Burn (GPT-2 and the Llama family): download, generate, chat, serve, pretrain, fine-tune, evaluate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download a model from the Hugging Face hub into the HF cache (gpt2, gpt2-medium, gpt2-large,
    /// gpt2-xl or any repo id); prints the local directory.
    Download(commands::download::Args),
    /// Generate text from a prompt (greedy by default; sampling with --temperature/--top-k/--top-p).
    Generate(commands::generate::Args),
    /// Write the logits of a token sequence to a safetensors file (for parity checks).
    Logits(commands::logits::Args),
    /// Chat with a model in the terminal (its chat template; streamed; /reset, /exit).
    Chat(commands::chat::Args),
    /// Print the token ids of a text, or of a conversation rendered with the model's chat template.
    Tokenize(commands::tokenize::Args),
    /// Download and preprocess a data set (spam, ...).
    Prepare(commands::prepare::Args),
    /// Draw a run's plots (plots/*.png) from its metrics.jsonl.
    Plot(commands::plot::Args),
    /// Fine-tune a pretrained model on a task (spam, ...).
    Finetune(commands::finetune::Args),
    /// Label new texts with a fine-tuned classifier.
    Classify(commands::classify::Args),
    /// A terminal dashboard over run directories, live or finished (q quits).
    Monitor(monitor::Args),
    /// Evaluate a model or a run: hellaswag, spam (a classifier on a CSV split), judge (LLM-scored responses).
    Eval(commands::eval::Args),
    /// Write a model (a run, any --model) as a Hugging Face directory with its tokenizer files.
    Export(commands::export::Args),
    /// Pretrain on token shards (`llmfs prepare fineweb`): from scratch or from weights, build-nanogpt's recipe.
    Pretrain(commands::pretrain::Args),
    /// Generate a model's responses to instruction records (a test split) for `eval judge`.
    GenerateResponses(commands::generate_responses::Args),
    /// Serve a model over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, /v1/models;
    /// /v1/classify for a classifier run).
    Serve(serve::Args),
    /// Mirror a run directory's metrics, samples and config to a tracker (TensorBoard event files).
    Track(commands::track::Args),
    /// Speed benchmarks on any compiled backend (GPT-2 124M shape unless --preset).
    ///
    /// Without a command: the standard workloads as a table (--compare: ratios against a saved
    /// baseline). With one: that benchmark's JSON (as `cargo bench`).
    Bench(commands::bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Download(args) => commands::download::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Logits(args) => commands::logits::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Prepare(args) => commands::prepare::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Finetune(args) => commands::finetune::run(args),
        Command::Classify(args) => commands::classify::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Pretrain(args) => commands::pretrain::run(args),
        Command::GenerateResponses(args) => commands::generate_responses::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Track(args) => commands::track::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
