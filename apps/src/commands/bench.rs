//! `llmfs bench train-step | generate | finetune-cls | hellaswag | serve`: the speed benchmarks of `cargo bench`
//! (`pipelines::bench`) in the shipped binary, so that a machine without a Rust toolchain (a GPU
//! box) can run them on any compiled backend. Prints one JSON line. Without a subcommand: the
//! standard workloads on one or more devices as a table (`bench_suite`).

use std::path::PathBuf;

use anyhow::Result;
use pipelines::bench::{finetune_cls, generate, hellaswag, train_step};

use super::bench_suite::{self, Devices, SuiteArgs};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub which: Option<Which>,
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// auto, cpu, cuda, cuda:N, wgpu, vulkan or metal; without a subcommand also a comma-separated
    /// list or `all` (every compiled backend)
    #[arg(long, default_value = "cpu", global = true)]
    pub device: Devices,
    /// Model shape: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl, mini or tiny (random weights)
    #[arg(long, default_value = "gpt2", global = true)]
    pub preset: String,
    /// CPU threads for the CPU backend (default: all cores)
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Also write the JSON result to this file
    #[arg(long, visible_alias = "json", global = true)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Forward + cross-entropy + backward + AdamW (random weights), and an inference forward
    TrainStep {
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Timed steps (after 2 warm-up steps)
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Dropout probability of every dropout layer (GPT-2 trains with 0.1)
        #[arg(long, default_value_t = 0.1)]
        dropout: f64,
        /// What trains: all, last-block (+ final norm), lora:R (adapters on every projection)
        #[arg(long, default_value = "all")]
        trains: train_step::Trains,
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
    /// HellaSwag scoring (examples/s): the context once for its 4 endings vs 4 whole rows per example
    Hellaswag {
        /// A HellaSwag jsonl file
        #[arg(long, default_value = "tests/fixtures/data/hellaswag_val_40.jsonl")]
        data: PathBuf,
        /// Only the first N examples
        #[arg(long)]
        limit: Option<usize>,
        /// Examples per forward pass
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
    },
    /// The HTTP server under load: concurrent streaming clients on loopback, one request at a
    /// time vs continuous batching
    Serve {
        /// Any --model (the tiny test model: tests/fixtures/gpt2-tiny)
        #[arg(long, default_value = "tests/fixtures/gpt2-tiny")]
        model: String,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds of load per configuration
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// New tokens per request
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
    },
}

pub fn run(args: Args) -> Result<()> {
    crate::runtime::set_threads(args.threads)?;
    let Some(which) = args.which else {
        // The table goes to stdout; the JSON only to --json/--out.
        let result = bench_suite::run(&args.suite, &args.device, &args.preset, args.threads)?;
        return pipelines::bench::save(&result, args.out.as_deref());
    };
    let device = args.device.one()?;
    let preset = args.preset;
    let result = match which {
        Which::TrainStep { batch, seq_len, steps, dropout, trains } => {
            train_step::run(device, &train_step::Options { batch, seq_len, steps, dropout, trains, preset })?
        }
        Which::Generate { reps, no_cache, batch } => generate::run(device, &generate::Options { reps, no_cache, batch, preset })?,
        Which::FinetuneCls { steps } => finetune_cls::run(device, &preset, steps)?,
        Which::Hellaswag { data, limit, batch_size } => hellaswag::run(device, &hellaswag::Options { data, limit, batch_size })?,
        Which::Serve { model, clients, seconds, max_tokens } => {
            // The thread count was set above, once for the process.
            let runtime = crate::runtime::RuntimeArgs { device, threads: None, seed: 0 };
            crate::serve::load_bench::run(&crate::serve::load_bench::Options { model, clients, seconds, max_tokens, threads: args.threads }, &runtime)?
        }
    };
    pipelines::bench::report(&result, args.out.as_deref())
}
