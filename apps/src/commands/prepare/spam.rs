//! `llmfs prepare spam`: the UCI SMS Spam Collection → balanced train / validation / test CSVs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use pipelines::data::spam::{self, SpamReport};

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

pub fn run(args: SpamArgs) -> Result<()> {
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
