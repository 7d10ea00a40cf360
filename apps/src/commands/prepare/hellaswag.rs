//! `llmfs prepare hellaswag`: the HellaSwag splits, downloaded and checked line by line.

use std::path::PathBuf;

use anyhow::Result;
use pipelines::data::hellaswag;

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

pub fn run(args: HellaswagArgs) -> Result<()> {
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
