//! Evaluate a model on HellaSwag's validation split as build-nanogpt does (acc and acc_norm).
//!
//!     cargo run --release --example hellaswag -- [MODEL] [LIMIT]
//!
//! MODEL is `gpt2` by default (any preset, hub id, HF directory, run directory or `random:<preset>`);
//! LIMIT the number of examples (default 1000 of the 10,042). The split is downloaded into
//! data/hellaswag on first use.

llmfs::gpt::use_mimalloc!();

use std::path::Path;

use llmfs::gpt::DeviceSpec;
use llmfs::pipelines::runs::load_model;
use llmfs::pipelines::data::hellaswag::{DEFAULT_DATA_DIR, DEFAULT_URL, Split, download_split, read_examples};
use llmfs::pipelines::eval::hellaswag::{default_batch_size, evaluate};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_name = args.next().unwrap_or_else(|| "gpt2".to_string());
    let limit: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1000);

    let device = DeviceSpec::Auto.resolve()?;
    let model = load_model(&model_name, &device, 0)?;
    let path = download_split(DEFAULT_URL, Path::new(DEFAULT_DATA_DIR), Split::Val)?;
    let mut examples = read_examples(&path)?;
    examples.truncate(limit);

    let start = std::time::Instant::now();
    let scores = evaluate(&model, &examples, default_batch_size(&device), |done| eprint!("\r{done}/{}", examples.len()))?;
    eprintln!();
    println!(
        "{model_name} on {} HellaSwag val examples: acc {:.4}, acc_norm {:.4} ({:.1} s)",
        scores.n,
        scores.acc,
        scores.acc_norm,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
