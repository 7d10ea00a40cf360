//! The whole pretraining pipeline offline, ~10 minutes on 2 CPU cores: the 300 FineWeb-Edu-style
//! documents shipped in `tests/fixtures/data/` (US State of the Union addresses, ~118k GPT-2
//! tokens) → token shards (shard 0 = validation) → a small GPT-2 trained from scratch → validation
//! loss, HellaSwag on the 40 shipped rows, and generated text. The loss falls from ~10.9 (a
//! uniform guess over 50,257 tokens) to ~6; the samples go from `the the the` to phrases like
//! `the United States of the ...`. With the internet, the same steps run on the real data set:
//! `llmfs prepare fineweb` and `llmfs pretrain --config gpt2 --total-batch 524288 ...`.
//!
//!     cargo run --release --example pretrain [-- --steps 150 --run-dir runs/pretrain-demo]

llmfs::gpt::use_mimalloc!();

use std::path::PathBuf;

use anyhow::Result;
use llmfs::gpt::generate::{GenerateConfig, generate};
use llmfs::gpt::hf::load_model_dir;
use llmfs::gpt::generate::sampling::Sampling;
use llmfs::gpt::{DeviceSpec, Tokenizer};
use llmfs::pipelines::data::fineweb::{PrepareOptions, Source, prepare_fineweb};
use llmfs::pipelines::data::hellaswag::read_examples;
use llmfs::pipelines::eval::hellaswag;
use llmfs::pipelines::finetune::LanguageModelJob;
use llmfs::pipelines::pretrain::{PretrainJob, pretrain};
use llmfs::pipelines::train::{LrSchedule, OptimConfig, TrainConfig};

#[derive(clap::Parser)]
struct Args {
    /// Optimizer steps of the run
    #[arg(long, default_value_t = 150)]
    steps: usize,
    /// Where the run goes (default: runs/pretrain-demo-<time>)
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let Args { steps, run_dir } = clap::Parser::parse();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let run_dir = run_dir.unwrap_or_else(|| PathBuf::from(format!("runs/pretrain-demo-{stamp}")));
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let device = DeviceSpec::Auto.resolve()?;

    // 1. Shards: 20,000 tokens each, so that shard 0 (validation) is a sixth of the corpus.
    let shards = run_dir.join("shards");
    let options = PrepareOptions { shard_size: 20_000, ..PrepareOptions::default() };
    let report = prepare_fineweb(&Source::Local(fixtures.join("data/fineweb_edu_sample.parquet")), &shards, &options)?;
    eprintln!("prepared {} tokens into {} shards in {}", report.tokens, report.shards.len(), shards.display());

    // 2. Pretrain the `mini` GPT-2 shape (4 layers × 4 heads × 128 dims) from scratch on rows of 128 tokens.
    let hellaswag_rows = read_examples(&fixtures.join("data/hellaswag_val_40.jsonl"))?;
    let job = PretrainJob {
        lm: LanguageModelJob {
            task: "pretrain".into(),
            model: "random:mini".into(),
            run_dir: run_dir.join("run"),
            dropout: Some(0.0),
            lora: None,
            train: TrainConfig {
                epochs: 1,
                batch_size: 8,
                seed: 1337,
                optim: OptimConfig {
                    lr: 3e-3,
                    weight_decay: 0.1,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    decay_all: false,
                    schedule: LrSchedule::WarmupCosine { warmup_steps: steps / 10, min_lr_ratio: 0.1 },
                    grad_clip: Some(1.0),
                },
                eval_every: Some(50),
                eval_batches: 10,
                checkpoint_every: Some(100),
                run_steps: Some(steps),
                ..TrainConfig::default()
            },
            resume: false,
            dashboard: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            device: device.clone(),
            details: serde_json::Value::Null,
        },
        data: shards,
        seq_len: 128,
        sample_prompt: Some("My fellow citizens,".into()),
        sample_tokens: 24,
        sample_every: Some(100),
        hellaswag_every: None,
        hellaswag: hellaswag_rows.clone(),
        eval_tasks: Default::default(),
    };
    let report = pretrain(&job)?;
    println!("validation loss {:.3} (perplexity {:.1}) after {} steps, {:.0} s", report.validation_loss, report.validation_perplexity, report.steps, report.seconds);

    // 3. HellaSwag on the 40 rows (a model this small guesses: ~25 %) and some text.
    let model = load_model_dir(&report.model_dir, &device)?;
    let scores = hellaswag::evaluate(&model, &hellaswag_rows, hellaswag::default_batch_size(&device), |_| {})?;
    println!("HellaSwag (40 rows): acc {:.3}, acc_norm {:.3}", scores.acc, scores.acc_norm);
    let tokenizer = Tokenizer::gpt2();
    let mut config = GenerateConfig::greedy(48);
    config.sampling = Sampling { temperature: 0.8, top_k: Some(40), top_p: None };
    config.seed = 7;
    for prompt in ["The state of the Union is", "Our economy"] {
        let out = generate(&model, &[tokenizer.encode(prompt)], &config)?;
        println!("{prompt}{}", out[0].text);
    }
    println!("run directory: {} (llmfs monitor {} / llmfs plot ...)", job.lm.run_dir.display(), job.lm.run_dir.display());
    Ok(())
}
