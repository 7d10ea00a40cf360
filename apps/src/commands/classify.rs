//! `llmfs classify --model RUN_DIR --text "..."`: label new texts with a fine-tuned classifier.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use pipelines::eval::classifier::classify_texts;
use pipelines::runs::load_classifier;

use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (its model/ or adapter/), a classifier directory in the HF layout or a classifier's LoRA adapter
    #[arg(long)]
    pub model: PathBuf,
    /// Text to classify (repeatable); without it, one text per line is read from stdin
    #[arg(long)]
    pub text: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// One JSON object per text on stdout ({"text","label","probability","probabilities"})
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.runtime.device()?;
    let (classifier, tokenizer) = load_classifier(&args.model, &device)?;
    let texts = if args.text.is_empty() {
        std::io::stdin().lock().lines().collect::<std::io::Result<Vec<String>>>().context("reading texts from stdin")?
    } else {
        args.text.clone()
    };
    let texts: Vec<String> = texts.into_iter().filter(|t| !t.trim().is_empty()).collect();
    anyhow::ensure!(!texts.is_empty(), "no text to classify: pass --text or lines on stdin");
    for prediction in classify_texts(&classifier, &tokenizer, &texts, args.batch_size)? {
        if args.json {
            println!("{}", serde_json::to_string(&prediction)?);
        } else {
            println!("{}\t{:.3}\t{}", prediction.label, prediction.probability, prediction.text);
        }
    }
    Ok(())
}
