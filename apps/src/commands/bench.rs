//! `llmfs bench train-step | generate | finetune-cls`: the speed benchmarks of `cargo bench`
//! (`pipelines::bench`) in the shipped binary, so that a machine without a Rust toolchain (a GPU
//! box) can run them on any compiled backend. Prints one JSON line.

use std::path::PathBuf;

use anyhow::Result;
use pipelines::bench::{finetune_cls, generate, train_step};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub which: Which,
    /// auto, cpu, cuda, cuda:N, wgpu, vulkan or metal
    #[arg(long, default_value = "cpu", global = true)]
    pub device: gpt::DeviceSpec,
    /// CPU threads for the CPU backend (default: all cores)
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Also write the JSON result to this file
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Forward + cross-entropy + backward + AdamW on the GPT-2 124M shape (random weights)
    TrainStep {
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Timed steps (after 2 warm-up steps)
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Dropout (0: attention runs the fused kernel)
        #[arg(long, default_value_t = 0.1)]
        dropout: f64,
    },
    /// 128 greedy tokens after a 16-token prompt with the KV cache; --batch N: batched vs one at a time
    Generate {
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also time generation without the KV cache
        #[arg(long)]
        no_cache: bool,
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Classifier fine-tuning steps (last block trainable), with and without the frozen-prefix cache
    FinetuneCls {
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
}

pub fn run(args: Args) -> Result<()> {
    crate::runtime::set_threads(args.threads)?;
    let result = match args.which {
        Which::TrainStep { batch, seq_len, steps, dropout } => {
            train_step::run(args.device, &train_step::Options { batch, seq_len, steps, dropout })?
        }
        Which::Generate { reps, no_cache, batch } => generate::run(args.device, &generate::Options { reps, no_cache, batch })?,
        Which::FinetuneCls { steps } => finetune_cls::run(args.device, steps)?,
    };
    pipelines::bench::report(&result, args.out.as_deref())
}
