//! `llmfs bench train-step | generate | finetune-cls | hellaswag | serve`: the speed benchmarks of `cargo bench`
//! (`pipelines::bench`) in the shipped binary, so that a machine without a Rust toolchain (a GPU
//! box) can run them on any compiled backend. Prints one JSON line. Without a subcommand: the
//! standard workloads on one or more devices as a table (`bench_suite`).

use anyhow::Result;
use pipelines::bench::{SharedArgs, finetune_cls, generate, hellaswag, train_step};

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
    #[command(flatten)]
    pub shared: SharedArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Which {
    /// Forward + cross-entropy + backward + AdamW (random weights), and an inference forward
    TrainStep(train_step::Options),
    /// 128 greedy tokens after a 16-token prompt with the KV cache; --batch N: batched vs one at a time
    Generate(generate::Options),
    /// Classifier fine-tuning steps (last block trainable), with and without the frozen-prefix cache
    FinetuneCls(finetune_cls::Options),
    /// HellaSwag scoring (examples/s): the context once for its 4 endings vs 4 whole rows per example
    Hellaswag(hellaswag::Options),
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
    let SharedArgs { preset, threads, out } = args.shared;
    gpt::backend::set_cpu_threads(threads)?;
    let Some(which) = args.which else {
        // The table goes to stdout; the JSON only to --json/--out.
        let result = bench_suite::run(&args.suite, &args.device, &preset, threads)?;
        return pipelines::bench::save(&result, out.as_deref());
    };
    let device = args.device.one()?;
    let result = match which {
        Which::TrainStep(options) => train_step::run(device, &preset, &options)?,
        Which::Generate(options) => generate::run(device, &preset, &options)?,
        Which::FinetuneCls(options) => finetune_cls::run(device, &preset, &options)?,
        Which::Hellaswag(options) => hellaswag::run(device, &options)?,
        Which::Serve { model, clients, seconds, max_tokens } => {
            // The thread count was set above, once for the process.
            let runtime = crate::runtime::RuntimeArgs { device, threads: None, seed: 0 };
            crate::serve::load_bench::run(&crate::serve::load_bench::Options { model, clients, seconds, max_tokens, threads }, &runtime)?
        }
    };
    pipelines::bench::report(&result, out.as_deref())
}
