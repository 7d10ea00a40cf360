//! `llmfs prepare <dataset>`: download and preprocess a data set. One subcommand per data set,
//! one file each; each prints its counts on stderr and, with `--json`, one JSON object on stdout.

mod fineweb;
mod hellaswag;
mod spam;

use anyhow::Result;

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
    Spam(spam::SpamArgs),
    /// HellaSwag → hellaswag_{train,val,test}.jsonl in a data directory, each line checked.
    Hellaswag(hellaswag::HellaswagArgs),
    /// FineWeb-Edu (or local parquet files) → GPT-2 token shards (.npy uint16) for pretraining,
    /// byte-identical to build-nanogpt's fineweb.py; reruns resume and skip finished shards.
    Fineweb(fineweb::FinewebArgs),
}

pub fn run(args: Args) -> Result<()> {
    match args.dataset {
        Dataset::Spam(args) => spam::run(args),
        Dataset::Hellaswag(args) => hellaswag::run(args),
        Dataset::Fineweb(args) => fineweb::run(args),
    }
}
