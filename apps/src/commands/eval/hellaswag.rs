//! `llmfs eval hellaswag`: acc and acc_norm as build-nanogpt scores them.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use pipelines::runs::ModelRef;
use pipelines::data::hellaswag::{self, Split};
use pipelines::eval::hellaswag::{HellaswagScores, default_batch_size, evaluate_with};
use serde_json::json;

use crate::progress::counting_bar;
use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct HellaswagArgs {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The split to evaluate (train or val; the test split has no labels)
    #[arg(long, default_value = "val")]
    pub split: Split,
    /// A HellaSwag jsonl file to evaluate instead of a split of the data directory
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the splits are kept (downloaded there when missing)
    #[arg(long, default_value = hellaswag::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where a missing split is downloaded from: an http(s) URL, a file:// URL or a local directory
    #[arg(long, default_value = hellaswag::DEFAULT_URL)]
    pub url: String,
    /// Evaluate only the first N examples
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass, 4 rows each (default: 1 on the CPU, 8 on a GPU); the scores do not depend on it
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Write one JSON line per example ({"ind","label","pred","pred_norm"}) to this file
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Print {"n","acc","acc_norm"} as the last line of stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: HellaswagArgs) -> Result<()> {
    ensure!(args.batch_size != Some(0), "--batch-size must be at least 1");
    ensure!(args.limit != Some(0), "--limit must be at least 1");
    let path = match &args.data {
        Some(path) => path.clone(),
        None => {
            ensure!(args.split.is_labelled(), "the HellaSwag test split has no labels: evaluate val or train");
            hellaswag::download_split(&args.url, &args.data_dir, args.split)?
        }
    };
    let mut examples = hellaswag::read_examples(&path)?;
    ensure!(!examples.is_empty(), "{} holds no examples", path.display());
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }

    let device = args.runtime.device()?;
    let load_start = Instant::now();
    let model_ref = ModelRef::resolve(&args.model);
    let tokenizer = model_ref.tokenizer()?;
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    let parameters = gpt::io::parameter_counts(&model).1;
    eprintln!("loaded {} ({parameters} parameters) on {device:?} in {:.1}s", args.model, load_start.elapsed().as_secs_f64());

    let progress = counting_bar(examples.len(), "hellaswag {pos}/{len} [{wide_bar}] {per_sec} eta {eta}");
    let start = Instant::now();
    let batch_size = args.batch_size.unwrap_or_else(|| default_batch_size(&device));
    let scores = evaluate_with(&model, &tokenizer, &examples, batch_size, |done| progress.set_position(done as u64))
        .with_context(|| format!("evaluating {} on {}", args.model, path.display()))?;
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    if let Some(out) = &args.predictions {
        write_predictions(out, &scores)?;
    }
    eprintln!(
        "HellaSwag {}: {} examples, acc {:.4} ({}/{}), acc_norm {:.4} ({}/{}) in {seconds:.1}s ({:.1} examples/s)",
        path.display(),
        scores.n,
        scores.acc,
        scores.num_correct,
        scores.n,
        scores.acc_norm,
        scores.num_correct_norm,
        scores.n,
        scores.n as f64 / seconds.max(1e-9)
    );
    if args.json {
        println!("{}", json!({ "n": scores.n, "acc": scores.acc, "acc_norm": scores.acc_norm }));
    }
    Ok(())
}

/// One line per example, written to a temporary file and renamed into place.
fn write_predictions(path: &std::path::Path, scores: &HellaswagScores) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    gpt::io::write_atomic_with(path, |tmp| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        for p in &scores.predictions {
            writeln!(file, "{}", json!({ "ind": p.ind, "label": p.label, "pred": p.pred, "pred_norm": p.pred_norm }))?;
        }
        file.flush()
    })?;
    eprintln!("wrote {} predictions to {}", scores.predictions.len(), path.display());
    Ok(())
}
