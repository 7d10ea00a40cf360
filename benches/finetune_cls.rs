//! Classification fine-tuning speed on the GPT-2 124M shape (random fp32 weights): batch 8 × 120
//! tokens, last block + final norm + 2-class head trainable, AdamW — the `cls` case of
//! `../shared/bench/torch_baseline` — with and without the frozen-prefix cache. The benchmark
//! itself is `pipelines::bench::finetune_cls` (also `llmfs bench finetune-cls`).
//!
//!     cargo bench --bench finetune_cls -- --threads 1 [--steps 5] [--preset gpt2] [--device cuda] [--out FILE.json]
//!
//! `scripts/bench-finetune.sh` runs it next to PyTorch and estimates a 5-epoch run on the book's
//! split sizes (1045 / 149 / 300 texts) from the reported cost of caching one example's prefix.

llmfs::gpt::use_mimalloc!();

use clap::Parser;
use llmfs::pipelines::bench::{self, BenchCli, finetune_cls};

fn main() -> anyhow::Result<()> {
    let cli = BenchCli::<finetune_cls::Options>::parse();
    let device = cli.setup()?;
    bench::report(&finetune_cls::run(device, &cli.shared.preset, &cli.options)?, cli.shared.out.as_deref())
}
