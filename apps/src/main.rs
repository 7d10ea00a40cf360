//! `llmfs`: one command line for GPT-2 models on Burn. Human messages go to stderr; results (and
//! `--json` objects, one per line) to stdout.

mod commands;
mod runtime;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "llmfs", version, about = "GPT-2 from scratch in Rust, on Burn: download, generate, inspect logits")]
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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Download(args) => commands::download::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Logits(args) => commands::logits::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
