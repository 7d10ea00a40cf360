//! Generation speed of the GPT-2 124M shape (seeded random weights, fp32, batch 1, 16-token prompt,
//! 128 greedy new tokens), the workload of `../shared/bench/torch_baseline` (`infer` case).
//!
//!     cargo bench --bench generate -- --threads 1 [--reps 3] [--no-cache] [--out FILE.json]
//!     cargo bench --bench generate -- --threads 1 --batch 8     # batched vs one prompt at a time
//!
//! Compare with PyTorch through `scripts/bench-generate.sh`, which runs both in one go and prints
//! the ratios: this VM's speed drifts, so only ratios measured together mean anything.

// mimalloc keeps freed pages for reuse: with the system allocator every large tensor costs fresh,
// zeroed pages (~10 % of a GPT-2 forward pass on Flex).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use gpt::burn::prelude::*;
use gpt::generate::{GenerateConfig, generate};
use gpt::{Gpt, GptConfig};

/// The first 16 tokens of the baseline's prompt ("I HAD always thought Jack Gisburn rather a cheap genius--though a").
const PROMPT: [u32; 16] = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632, 438, 2016, 257];
const NEW_TOKENS: usize = 128;

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// GFLOP/s of a 1024×768 @ 768×3072 matmul (the baseline's calibration, to see machine drift).
fn calibrate(device: &Device) -> f64 {
    let a = Tensor::<2>::random([1024, 768], gpt::burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([768, 3072], gpt::burn::tensor::Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::new();
    for i in 0..12 {
        let start = Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    2.0 * 1024.0 * 768.0 * 3072.0 / times[times.len() / 2] / 1e9
}

fn timed_generation(model: &Gpt, new_tokens: usize, use_cache: bool) -> (f64, Vec<u32>) {
    let config = GenerateConfig { eos_token: None, use_cache, ..GenerateConfig::greedy(new_tokens) };
    let start = Instant::now();
    let out = generate(model, &[PROMPT.to_vec()], &config).expect("generation runs");
    (start.elapsed().as_secs_f64(), out[0].token_ids.clone())
}

/// `batch` prompts (the baseline's, each with another last token) generated as one batch through
/// the KV cache and then one at a time: the speed-up of batching (`generate-responses`, `serve`),
/// measured in this process, with the tokens checked to be the same.
fn batched_against_solo(model: &Gpt, batch: usize, threads: usize) -> serde_json::Value {
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|row| {
            let mut prompt = PROMPT.to_vec();
            prompt[PROMPT.len() - 1] = 257 + 13 * row as u32;
            prompt
        })
        .collect();
    let config = GenerateConfig { eos_token: None, ..GenerateConfig::greedy(NEW_TOKENS) };
    generate(model, &prompts[..1], &GenerateConfig { max_new_tokens: 8, ..config.clone() }).expect("warm-up");
    let start = Instant::now();
    let batched = generate(model, &prompts, &config).expect("batched generation");
    let batched_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let solo: Vec<Vec<u32>> = prompts.iter().map(|p| generate(model, std::slice::from_ref(p), &config).expect("generation")[0].token_ids.clone()).collect();
    let solo_s = start.elapsed().as_secs_f64();
    for (row, (b, s)) in batched.iter().zip(&solo).enumerate() {
        assert_eq!(&b.token_ids, s, "row {row}: batched and solo tokens differ");
    }
    let tokens = (batch * NEW_TOKENS) as f64;
    serde_json::json!({
        "bench": "llmfs_generate_batched_gpt2_124m", "backend": "flex", "threads": threads,
        "batch": batch, "prompt_len": PROMPT.len(), "new_tokens": NEW_TOKENS,
        "batched": { "s": batched_s, "tokens_per_s": tokens / batched_s },
        "one_at_a_time": { "s": solo_s, "tokens_per_s": tokens / solo_s },
        "speedup": solo_s / batched_s, "same_tokens": true,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg_value(&args, "--threads").and_then(|t| t.parse().ok()).unwrap_or(2);
    let reps: usize = arg_value(&args, "--reps").and_then(|t| t.parse().ok()).unwrap_or(3);
    let no_cache = args.iter().any(|a| a == "--no-cache");
    gpt::device::set_cpu_threads(threads).expect("thread pool");

    let device = Device::flex();
    let config = GptConfig::preset("gpt2").expect("preset");
    let model = Gpt::init(&config, 0, &device).expect("init");
    if let Some(batch) = arg_value(&args, "--batch").and_then(|b| b.parse::<usize>().ok()).filter(|&b| b > 1) {
        let result = batched_against_solo(&model, batch, threads);
        println!("{result}");
        if let Some(path) = arg_value(&args, "--out") {
            std::fs::write(&path, result.to_string() + "\n").expect("writing --out");
        }
        return;
    }
    let calib_before = calibrate(&device);

    timed_generation(&model, 8, true); // warm-up
    let prefill = median((0..5).map(|_| timed_generation(&model, 1, true).0).collect());
    let runs: Vec<(f64, Vec<u32>)> = (0..reps).map(|_| timed_generation(&model, NEW_TOKENS, true)).collect();
    let cached_s = median(runs.iter().map(|r| r.0).collect());
    let uncached = no_cache.then(|| timed_generation(&model, NEW_TOKENS, false));
    if let Some((_, tokens)) = &uncached {
        assert_eq!(tokens, &runs[0].1, "cached and uncached greedy tokens differ");
    }
    let calib_after = calibrate(&device);

    let result = serde_json::json!({
        "bench": "llmfs_generate_gpt2_124m",
        "backend": "flex",
        "threads": threads,
        "batch": 1, "prompt_len": PROMPT.len(), "new_tokens": NEW_TOKENS,
        "prefill_16_tokens_plus_1_s": prefill,
        "kv_cache": { "median_s": cached_s, "all_s": runs.iter().map(|r| r.0).collect::<Vec<_>>(),
                      "tokens_per_s": NEW_TOKENS as f64 / cached_s },
        "no_cache": uncached.as_ref().map(|(s, _)| serde_json::json!({ "s": s, "tokens_per_s": NEW_TOKENS as f64 / s })),
        "first_new_tokens": &runs[0].1[..8],
        "calib_gflops_before": calib_before,
        "calib_gflops_after": calib_after,
    });
    println!("{result}");
    if let Some(path) = arg_value(&args, "--out") {
        std::fs::write(&path, result.to_string() + "\n").expect("writing --out");
    }
}
