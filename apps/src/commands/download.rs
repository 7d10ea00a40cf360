//! `llmfs download <model>`

use anyhow::Result;
use gpt::io::{HubOptions, fetch_model};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// gpt2, gpt2-medium, gpt2-large, gpt2-xl, or any Hugging Face repo id (e.g. openai-community/gpt2)
    pub model: String,
    /// Branch, tag or commit to download
    #[arg(long, default_value = "main")]
    pub revision: String,
}

pub fn run(args: Args) -> Result<()> {
    let options = HubOptions { revision: args.revision, ..HubOptions::from_env() };
    let dir = fetch_model(&args.model, &options)?;
    eprintln!("{} is in {}", args.model, dir.display());
    println!("{}", dir.display());
    Ok(())
}
