//! Full training-step speed of the GPT-2 124M shape (random fp32 weights, dropout 0.1): forward,
//! masked cross-entropy, backward and AdamW on every parameter, on batches of `--batch` rows of
//! `--seq-len` tokens — by default B4×T256, the `train` case of `../shared/bench/torch_baseline`
//! (what `llmfs pretrain` and `llmfs finetune instruct` run each step).
//!
//!     cargo bench --bench train_step -- --threads 1 [--batch 4 --seq-len 256] [--steps 5] [--out FILE.json]
//!
//! `scripts/bench-train.sh` runs it back to back with PyTorch and prints the ratios.

// mimalloc keeps freed pages for reuse: with the system allocator every large tensor costs fresh,
// zeroed pages (~10 % of a GPT-2 forward pass on Flex).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use llmfs::gpt::burn::optim::GradientsParams;
use llmfs::gpt::burn::prelude::*;
use llmfs::gpt::{Gpt, GptConfig};
use llmfs::pipelines::train::OptimConfig;
use llmfs::pipelines::train::steps::{LanguageModelTraining, LmBatch};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The process's peak resident memory (VmHWM), in MiB, where /proc has it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").unwrap_or(2);
    let steps: usize = arg(&args, "--steps").unwrap_or(5);
    let batch: usize = arg(&args, "--batch").unwrap_or(4);
    let seq_len: usize = arg(&args, "--seq-len").unwrap_or(256);
    llmfs::gpt::device::set_cpu_threads(threads).expect("thread pool");
    let device = Device::flex().autodiff();
    device.seed(0);
    let gpt = Gpt::init(&GptConfig::preset("gpt2").expect("preset").with_dropout(0.1), 0, &device).expect("init");
    let params = gpt.num_params();
    let mut model = LanguageModelTraining { gpt, grad_clip: None };
    // torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1), as the baseline.
    let mut optimizer = OptimConfig { decay_all: true, ..OptimConfig::default() }.optimizer();
    let tokens = Tensor::<2, Int>::random([batch, seq_len + 1], llmfs::gpt::burn::tensor::Distribution::Uniform(0.0, 50256.0), &device);
    let lm_batch = LmBatch { inputs: tokens.clone().slice([0..batch, 0..seq_len]), targets: tokens.slice([0..batch, 1..seq_len + 1]) };

    let (mut times, mut losses) = (Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        let start = Instant::now();
        let out = model.forward_batch(lm_batch.clone());
        let grads = GradientsParams::from_grads(out.loss.clone().backward(), &model);
        model = optimizer.step(5e-5, model, grads);
        losses.push(out.loss.into_scalar::<f32>() as f64);
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let step = median(times.clone());
    let result = serde_json::json!({
        "bench": "llmfs_train_gpt2_124m", "backend": "flex", "threads": threads, "batch": batch, "seq_len": seq_len,
        "n_params": params, "dropout": 0.1,
        "step": { "median_s": step, "all_s": times },
        "tokens_per_s": (batch * seq_len) as f64 / step,
        "losses": losses, "peak_rss_mib": peak_rss_mib(),
    });
    println!("{result}");
    if let Some(path) = arg::<String>(&args, "--out") {
        std::fs::write(&path, result.to_string() + "\n").expect("writing --out");
    }
}
