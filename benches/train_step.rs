//! Full training-step speed of the GPT-2 124M shape (random fp32 weights, dropout 0.1): forward,
//! masked cross-entropy, backward and AdamW on every parameter, on batches of `--batch` rows of
//! `--seq-len` tokens — by default B4×T256, the `train` case of `../shared/bench/torch_baseline`.
//! The benchmark itself is `pipelines::bench::train_step` (also `llmfs bench train-step`).
//!
//!     cargo bench --bench train_step -- --threads 1 [--batch 4 --seq-len 256] [--steps 5] [--dropout 0.1] [--preset gpt2] [--precision f32|bf16-mixed|f16-mixed] [--trains lora:8 [--quantize nf4]] [--out FILE.json]
//!     cargo bench --features cuda --bench train_step -- --device cuda --batch 16 --seq-len 1024
//!
//! `scripts/bench-train.sh` runs it back to back with PyTorch and prints the ratios.

llmfs::gpt::use_mimalloc!();

use clap::Parser;
use llmfs::pipelines::bench::{self, BenchCli, train_step};

fn main() -> anyhow::Result<()> {
    let cli = BenchCli::<train_step::Options>::parse();
    let device = cli.setup()?;
    bench::report(&train_step::run(device, &cli.shared.preset, &cli.options)?, cli.shared.out.as_deref())
}
