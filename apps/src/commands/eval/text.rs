//! `llmfs eval text`: reference-based scores of generated responses (ROUGE as rouge-score, BLEU and
//! chrF as sacrebleu, exact match), per record in the report file, over the file on stderr / stdout.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use pipelines::eval::text_metrics::report::{Metric, default_report_path, read_pairs, score_pairs, write_report};

#[derive(clap::Args, Debug)]
pub struct TextArgs {
    /// The responses file: a JSON list or JSONL of records (`llmfs generate-responses` writes one)
    #[arg(long)]
    pub responses: PathBuf,
    /// The scores to compute
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rouge,bleu,chrf,exact")]
    pub metrics: Vec<Metric>,
    /// The field holding the reference text
    #[arg(long, default_value = "output")]
    pub reference_field: String,
    /// The field holding the generated text
    #[arg(long, default_value = "model_response")]
    pub response_field: String,
    /// Porter-stem ROUGE tokens longer than 3 characters (rouge-score's use_stemmer=True)
    #[arg(long)]
    pub stemmer: bool,
    /// Where to write the per-record scores (default: NAME.text-scores.json beside --responses)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the file's scores as JSON on stdout (the last line)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TextArgs) -> Result<()> {
    let mut metrics: Vec<Metric> = Vec::new();
    for metric in &args.metrics {
        if !metrics.contains(metric) {
            metrics.push(*metric);
        }
    }
    ensure!(!metrics.is_empty(), "--metrics names no metric");
    let pairs = read_pairs(&args.responses, &args.reference_field, &args.response_field)?;
    let mut report = score_pairs(&pairs, &metrics, args.stemmer);
    report.responses = Some(args.responses.clone());
    let out = args.out.clone().unwrap_or_else(|| default_report_path(&args.responses));
    write_report(&out, &report)?;

    eprintln!("{} records from {}; per-record scores in {}", pairs.len(), args.responses.display(), out.display());
    let scores = &report.summary.scores;
    // The units the references print: ROUGE and exact match are fractions, BLEU and chrF 0-100.
    let rows = [
        ("ROUGE-1 F1", scores.rouge1, 4),
        ("ROUGE-2 F1", scores.rouge2, 4),
        ("ROUGE-L F1", scores.rouge_l, 4),
        ("ROUGE-Lsum F1", scores.rouge_lsum, 4),
        ("BLEU (corpus)", scores.bleu, 2),
        ("chrF (corpus)", scores.chrf, 2),
        ("exact match", scores.exact, 4),
    ];
    for (name, value, decimals) in rows {
        if let Some(value) = value {
            eprintln!("  {name:<14} {value:8.decimals$}");
        }
    }
    for line in &report.matches {
        eprintln!("  = {line}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report.summary)?);
    }
    Ok(())
}
