//! `llmfs prepare <dataset>`: download and preprocess a data set. One subcommand per data set;
//! each prints its counts on stderr and, with `--json`, one JSON object on stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pipelines::data::hellaswag;
use pipelines::data::spam::{self, SpamReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub dataset: Dataset,
}

/// The data sets `prepare` knows.
#[derive(clap::Subcommand, Debug)]
pub enum Dataset {
    /// SMS Spam Collection → balanced train.csv, validation.csv, test.csv (Label,Text; 0 = ham,
    /// 1 = spam) for classification fine-tuning.
    Spam(SpamArgs),
    /// HellaSwag → hellaswag_{train,val,test}.jsonl in a data directory, each line checked.
    Hellaswag(HellaswagArgs),
}

#[derive(clap::Args, Debug)]
pub struct SpamArgs {
    /// The collection zip: an http(s) URL, a file:// URL or a local path
    #[arg(long, visible_alias = "data", default_value = spam::DEFAULT_URL)]
    pub url: String,
    /// Output directory (the downloaded zip is kept there and reused)
    #[arg(long)]
    pub out: PathBuf,
    /// Seed for balancing and shuffling
    #[arg(long, default_value_t = spam::DEFAULT_SEED)]
    pub seed: u64,
    /// Also print the counts as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct HellaswagArgs {
    /// Data directory (files already there are kept, not downloaded again)
    #[arg(long, default_value = hellaswag::DEFAULT_DATA_DIR)]
    pub out: PathBuf,
    /// Which split: val, train, test (no labels) or all
    #[arg(long, default_value = "val")]
    pub split: HellaswagSplits,
    /// Where the hellaswag_<split>.jsonl files are: an http(s) URL, a file:// URL or a local directory
    #[arg(long, default_value = hellaswag::DEFAULT_URL)]
    pub url: String,
    /// Also print the result as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// One HellaSwag split, or all three.
#[derive(Clone, Debug)]
pub struct HellaswagSplits(Vec<hellaswag::Split>);

impl std::str::FromStr for HellaswagSplits {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "all" => Ok(Self(hellaswag::Split::ALL.to_vec())),
            one => Ok(Self(vec![one.parse().map_err(|e: String| format!("{e} (or all)"))?])),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.dataset {
        Dataset::Spam(args) => run_spam(args),
        Dataset::Hellaswag(args) => run_hellaswag(args),
    }
}

fn run_hellaswag(args: HellaswagArgs) -> Result<()> {
    let prepared = hellaswag::prepare(&args.url, &args.out, &args.split.0)?;
    for split in &prepared {
        let origin = if split.reused { " (already there)" } else { "" };
        eprintln!("{} split: {} examples in {}{origin}", split.split, split.examples, split.path.display());
    }
    if args.json {
        println!("{}", serde_json::json!({ "out": args.out, "splits": prepared }));
    }
    Ok(())
}

fn run_spam(args: SpamArgs) -> Result<()> {
    let report = spam::prepare_spam(&args.url, &args.out, args.seed)
        .with_context(|| format!("cannot prepare the SMS spam data in {}", args.out.display()))?;
    print_spam_report(&report, args.seed);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn print_spam_report(report: &SpamReport, seed: u64) {
    let origin = if report.reused_download { " (already downloaded)" } else { "" };
    eprintln!(
        "read {} lines from {}{origin}: {} ham, {} spam",
        report.lines,
        report.zip.display(),
        report.ham,
        report.spam
    );
    if report.skipped > 0 {
        let examples: Vec<String> =
            report.skipped_lines.iter().map(|s| format!("line {}: {}", s.line, s.reason)).collect();
        let more = if report.skipped > examples.len() { ", ..." } else { "" };
        eprintln!("skipped {} malformed lines ({}{more})", report.skipped, examples.join(", "));
    }
    if report.invalid_utf8_lines > 0 {
        eprintln!("{} lines had bytes that are not UTF-8 (replaced by U+FFFD)", report.invalid_utf8_lines);
    }
    eprintln!("balanced to {} messages ({} per class, seed {seed})", report.balanced, report.balanced / 2);
    let [train, validation, test] = spam::SPLIT_FILES;
    eprintln!(
        "wrote {train} ({}), {validation} ({}), {test} ({}) to {}",
        report.train,
        report.validation,
        report.test,
        report.out_dir.display()
    );
}
