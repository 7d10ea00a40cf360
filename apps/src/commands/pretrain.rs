//! `llmfs pretrain`: train a language model on token shards (`llmfs prepare fineweb`), from
//! scratch (`--config`) or from weights (`--init`), with build-nanogpt's recipe as defaults: GPT-2
//! on GPT-2's shards, a Llama-family model on shards of its tokenizer's ids (`--tokenizer`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use pipelines::data::hellaswag;
use pipelines::finetune::LanguageModelJob;
use pipelines::pretrain::{PretrainJob, accumulation_for, pretrain};
use pipelines::train::{LrSchedule, OptimConfig, Precision, TrainConfig};

use crate::commands::finetune::wants_dashboard;
use crate::commands::eval::tasks::EvalTasksArgs;
use crate::commands::track::TrackArgs;
use crate::runtime::RuntimeArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory with the token shards (*_val_000000.npy, *_train_*.npy)
    #[arg(long, default_value = "data/edu_fineweb10B")]
    pub data: PathBuf,
    /// Train from scratch with this preset's shape (gpt2, gpt2-medium, ..., tiny; smollm2-135m,
    /// smollm2-360m, qwen3-0.6b, llama-3.2-1b, llama-tiny: the shards' tokenizer)
    #[arg(long, conflicts_with = "init")]
    pub config: Option<String>,
    /// Continue from these weights (a preset/hub id, an HF directory or a run directory)
    #[arg(long)]
    pub init: Option<String>,
    #[arg(long, default_value = "runs/pretrain")]
    pub run_dir: PathBuf,
    /// Rows per micro-batch (B)
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Tokens per row (T)
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    /// Tokens per optimizer step, reached by gradient accumulation (default: one micro-batch;
    /// build-nanogpt uses 524288)
    #[arg(long)]
    pub total_batch: Option<usize>,
    /// Optimizer steps of the run (the LR schedule spans them; default: one pass over the shards)
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the training shards (when --steps is not given)
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 6e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 715)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: off)
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Validation loss every N steps on --eval-batches batches
    #[arg(long, default_value_t = 250)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 20)]
    pub eval_batches: usize,
    /// HellaSwag every N steps (and at the end) on the first --hellaswag-limit validation rows
    #[arg(long)]
    pub hellaswag_every: Option<usize>,
    #[arg(long, default_value_t = 10042)]
    pub hellaswag_limit: usize,
    /// HellaSwag rows (jsonl); default: the validation split in data/hellaswag (`llmfs prepare hellaswag`)
    #[arg(long)]
    pub hellaswag_data: Option<PathBuf>,
    /// A greedy sample from this prompt every --sample-every steps and at the end ("" for none)
    #[arg(long, default_value = "Hello, I'm a language model,")]
    pub sample_prompt: String,
    #[arg(long, default_value_t = 250)]
    pub sample_every: usize,
    #[arg(long, default_value_t = 32)]
    pub sample_tokens: usize,
    /// Also checkpoint every N steps (always at the end)
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_every: usize,
    /// Stop after N optimizer steps (with a checkpoint; --resume continues)
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub resume: bool,
    /// Plain one-line progress even in a terminal (no dashboard)
    #[arg(long)]
    pub plain: bool,
    /// Print the final report as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub eval_tasks: EvalTasksArgs,
    /// Under `mpirun` or with --devices: seconds a rank waits for the others in a collective before every rank stops
    #[arg(long, default_value_t = pipelines::distributed::DEFAULT_TIMEOUT.as_secs())]
    pub collective_timeout: u64,
    /// Data-parallel on several devices of this process, one rank (thread) each, e.g.
    /// cuda:0,cuda:1 (in place of --device): as under mpirun, --batch-size is each rank's
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<gpt::DeviceSpec>,
    /// Matrix products in f32, bf16-mixed (bf16 inputs, f32 accumulation; f32 weights and
    /// optimizer state: the CPU's AVX512-BF16 kernels), or f16-mixed (f16 inputs, emulated on
    /// the CPU, with dynamic loss scaling as torch.amp.GradScaler)
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    #[command(flatten)]
    pub tracking: TrackArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    crate::runtime::train_on_ranks(&args.devices, args.collective_timeout, &args.runtime, |runtime| train(Args { runtime, ..args.clone() }))
}

fn train(args: Args) -> Result<()> {
    let device = args.runtime.device()?;
    let model = match (&args.config, &args.init) {
        (Some(preset), None) => format!("random:{preset}"),
        (None, Some(init)) => init.clone(),
        (None, None) => "random:gpt2".to_string(),
        (Some(_), Some(_)) => bail!("give --config (from scratch) or --init (from weights), not both"),
    };
    let grad_accumulation = match args.total_batch {
        Some(total) => {
            // Each optimizer step sees every rank's micro-batches.
            let ranks = pipelines::distributed::current().world_size();
            accumulation_for(total, args.batch_size * ranks, args.seq_len).with_context(|| format!("--batch-size {} on each of {ranks} rank(s)", args.batch_size))?
        }
        None => 1,
    };
    let train = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.runtime.seed,
        optim: OptimConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            decay_all: false,
            schedule: LrSchedule::WarmupCosine { warmup_steps: args.warmup_steps, min_lr_ratio: args.min_lr_ratio },
            grad_clip: (args.grad_clip > 0.0).then_some(args.grad_clip),
        },
        grad_accumulation,
        eval_every: Some(args.eval_every),
        eval_batches: args.eval_batches,
        checkpoint_every: Some(args.checkpoint_every),
        drop_last: true,
        stop_after_steps: args.max_steps,
        run_steps: args.steps,
        shuffle: false,
        full_validation: false,
        precision: args.precision,
    };
    let hellaswag = match args.hellaswag_every {
        Some(_) => {
            let path = args.hellaswag_data.clone().unwrap_or_else(|| hellaswag::split_path(std::path::Path::new(hellaswag::DEFAULT_DATA_DIR), hellaswag::Split::Val));
            let mut examples = hellaswag::read_examples(&path)?;
            examples.truncate(args.hellaswag_limit);
            examples
        }
        None => Vec::new(),
    };
    let dashboard = wants_dashboard(args.plain);
    let job = PretrainJob {
        lm: LanguageModelJob {
            task: "pretrain".into(),
            model,
            run_dir: args.run_dir.clone(),
            dropout: Some(args.dropout),
            lora: None,
            train,
            resume: args.resume,
            dashboard,
            device,
            details: serde_json::Value::Null,
        },
        data: args.data.clone(),
        seq_len: args.seq_len,
        sample_prompt: (!args.sample_prompt.is_empty()).then(|| args.sample_prompt.clone()),
        sample_tokens: args.sample_tokens,
        sample_every: Some(args.sample_every),
        hellaswag_every: args.hellaswag_every,
        hellaswag,
        eval_tasks: args.eval_tasks.read()?,
    };
    let report = args.tracking.around(&args.run_dir, args.resume, || pretrain(&job))?;
    if pipelines::distributed::current().rank() != 0 {
        return Ok(()); // rank 0 reports
    }
    eprintln!(
        "validation loss {:.4} (perplexity {:.1}) after {} steps in {:.1}s; model in {}",
        report.validation_loss,
        report.validation_perplexity,
        report.steps,
        report.seconds,
        report.model_dir.display()
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
