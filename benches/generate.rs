//! Generation speed of the GPT-2 124M shape (seeded random weights, fp32, batch 1, 16-token prompt,
//! 128 greedy new tokens), the workload of `../shared/bench/torch_baseline` (`infer` case). The
//! benchmark itself is `pipelines::bench::generate` (also `llmfs bench generate`).
//!
//!     cargo bench --bench generate -- --threads 1 [--reps 3] [--no-cache] [--preset gpt2] [--out FILE.json]
//!     cargo bench --bench generate -- --threads 1 --batch 8     # batched vs one prompt at a time
//!     cargo bench --features cuda --bench generate -- --device cuda [--batch 8]
//!
//! Compare with PyTorch through `scripts/bench-generate.sh`, which runs both in one go and prints
//! the ratios: this VM's speed drifts, so only ratios measured together mean anything.

llmfs::gpt::use_mimalloc!();

use clap::Parser;
use llmfs::pipelines::bench::{self, BenchCli, generate};

fn main() -> anyhow::Result<()> {
    let cli = BenchCli::<generate::Options>::parse();
    let device = cli.setup()?;
    bench::report(&generate::run(device, &cli.shared.preset, &cli.options)?, cli.shared.out.as_deref())
}
