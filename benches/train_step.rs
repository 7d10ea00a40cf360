//! Full training-step speed of the GPT-2 124M shape (random fp32 weights, dropout 0.1): forward,
//! masked cross-entropy, backward and AdamW on every parameter, on batches of `--batch` rows of
//! `--seq-len` tokens — by default B4×T256, the `train` case of `../shared/bench/torch_baseline`.
//! The benchmark itself is `pipelines::bench::train_step` (also `llmfs bench train-step`).
//!
//!     cargo bench --bench train_step -- --threads 1 [--batch 4 --seq-len 256] [--steps 5] [--dropout 0.1] [--preset gpt2] [--out FILE.json]
//!     cargo bench --features cuda --bench train_step -- --device cuda --batch 16 --seq-len 1024
//!
//! `scripts/bench-train.sh` runs it back to back with PyTorch and prints the ratios.

llmfs::gpt::use_mimalloc!();

use llmfs::pipelines::bench::{self, arg, train_step};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let device = bench::setup(&args)?;
    let defaults = train_step::Options::default();
    let options = train_step::Options {
        batch: arg(&args, "--batch").unwrap_or(defaults.batch),
        seq_len: arg(&args, "--seq-len").unwrap_or(defaults.seq_len),
        steps: arg(&args, "--steps").unwrap_or(defaults.steps),
        dropout: arg(&args, "--dropout").unwrap_or(defaults.dropout),
        trains: arg(&args, "--trains").unwrap_or(defaults.trains),
        preset: arg(&args, "--preset").unwrap_or(defaults.preset),
    };
    bench::report(&train_step::run(device, &options)?, arg::<std::path::PathBuf>(&args, "--out").as_deref())
}
