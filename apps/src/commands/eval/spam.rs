//! `llmfs eval spam --model RUN_DIR --data test.csv`: a fine-tuned classifier on a labelled split.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use pipelines::data::spam::read_split_csv;
use pipelines::eval::classifier::evaluate_messages;

use pipelines::runs::load_classifier;
use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct SpamArgs {
    /// A classifier run directory (its model/) or a classifier directory in the HF layout
    #[arg(long)]
    pub model: PathBuf,
    /// A split as `llmfs prepare spam` writes it (header Label,Text), or a directory holding test.csv
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print {"n","accuracy","macro_f1",…,"loss","classes","confusion"} as the last line of stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: SpamArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let data = if args.data.is_dir() { args.data.join("test.csv") } else { args.data.clone() };
    let messages = read_split_csv(&data)?;
    ensure!(!messages.is_empty(), "{} holds no messages", data.display());

    let device = args.runtime.device()?;
    let (classifier, tokenizer) = load_classifier(&args.model, &device)?;
    let result = evaluate_messages(&classifier, &tokenizer, &messages, args.batch_size).with_context(|| format!("evaluating on {}", data.display()))?;

    super::classify::report(&data.display().to_string(), classifier.labels(), &result, args.json)
}

