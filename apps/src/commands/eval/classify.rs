//! `llmfs eval classify --model RUN --data FILE`: a fine-tuned classifier on any labelled file
//! (the formats and columns `finetune classify` reads), scored as a run scores its splits.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use gpt::io::HubOptions;
use pipelines::data::labelled;
use pipelines::data::source::DataSource;
use pipelines::eval::classifier::{SplitEvaluation, evaluate_messages};
use pipelines::runs::load_classifier;
use serde_json::json;

use crate::commands::finetune::ColumnArgs;
use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// A classifier run directory (its model/ or adapter/) or a classifier directory in the HF layout
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled texts: a .csv / .tsv (header row), .jsonl, .json or .parquet file, a directory of
    /// split files or hf:owner/name[:config][@split] (their `test` split unless @split names one)
    #[arg(long)]
    pub data: String,
    #[command(flatten)]
    pub columns: ColumnArgs,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print {"n","accuracy","macro_f1",…,"classes","confusion"} as the last line of stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: ClassifyArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let columns = args.columns.columns()?;
    let data = DataSource::open(&args.data, &HubOptions::from_env())?;
    let split = data.main_split("test")?;
    let records = labelled::labelled_texts(data.read(&split, Some(&columns.all()))?, &columns)?;
    let device = args.runtime.device()?;
    let (classifier, tokenizer) = load_classifier(&args.model, &device)?;
    // Every label must be one of the classifier's classes (an error naming the row otherwise).
    let messages = labelled::messages(records, classifier.labels())?;
    let result = evaluate_messages(&classifier, &tokenizer, &messages, args.batch_size)?;
    report(&data.split_label(&split), classifier.labels(), &result, args.json)
}

/// The scores on stderr (accuracy, macro-F1, a per-class table, the confusion matrix) and, with
/// `json`, all of them as the last line of stdout.
pub fn report(data: &str, labels: &[String], result: &SplitEvaluation, json: bool) -> Result<()> {
    let m = &result.metrics;
    eprintln!("{data}: {} texts, accuracy {:.4}, macro-F1 {:.4}, loss {:.4}", m.n, m.accuracy, m.macro_f1, result.loss);
    eprintln!("{:>10} {:>9} {:>9} {:>9} {:>8}", "", "precision", "recall", "F1", "support");
    for class in &m.classes {
        eprintln!("{:>10} {:>9.4} {:>9.4} {:>9.4} {:>8}", class.label, class.precision, class.recall, class.f1, class.support);
    }
    eprintln!("confusion (rows: true label, columns: predicted): {}", labels.join(" / "));
    for (label, row) in labels.iter().zip(&m.confusion) {
        eprintln!("  {label:>8}: {row:?}");
    }
    if json {
        println!("{}", json!(result));
    }
    Ok(())
}
