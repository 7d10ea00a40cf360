//! `llmfs eval spam --model RUN_DIR --data test.csv`: a fine-tuned classifier on a labelled split.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use pipelines::data::spam::read_split_csv;
use pipelines::eval::classifier::evaluate_messages;
use serde_json::json;

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
    /// Print {"n","accuracy","loss","confusion"} as the last line of stdout
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

    let (labels, m) = (classifier.labels(), &result.metrics);
    eprintln!("{}: {} messages, accuracy {:.4}, macro-F1 {:.4}, loss {:.4}", data.display(), m.n, m.accuracy, m.macro_f1, result.loss);
    eprintln!("{:>10} {:>9} {:>9} {:>9} {:>8}", "", "precision", "recall", "F1", "support");
    for class in &m.classes {
        eprintln!("{:>10} {:>9.4} {:>9.4} {:>9.4} {:>8}", class.label, class.precision, class.recall, class.f1, class.support);
    }
    eprintln!("confusion (rows: true label, columns: predicted): {}", labels.join(" / "));
    for (label, row) in labels.iter().zip(&m.confusion) {
        eprintln!("  {label:>8}: {row:?}");
    }
    if args.json {
        println!("{}", json!(result));
    }
    Ok(())
}

