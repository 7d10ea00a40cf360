//! Generation speed: seeded random weights, f32 (or bf16 weight matrices, `--dtype`, or NF4 block
//! projections, `--quantize nf4`), a 16-token prompt, 128 greedy new tokens — the workload of `../shared/bench/torch_baseline` (`infer` case) — one prompt at a time, or a batch
//! of prompts against the same prompts one at a time (the speed-up of batching, with the tokens
//! checked to be the same).

use std::time::Instant;

use anyhow::{Result, ensure};
use gpt::burn::prelude::*;
use gpt::backend::DeviceSpec;
use gpt::generate::{GenerateConfig, generate};
use gpt::models::{CausalLm, LanguageModel};
use serde_json::{Value, json};

use super::median;
use crate::runs::WeightArgs;

/// The first 16 tokens of the baseline's prompt ("I HAD always thought Jack Gisburn rather a cheap genius--though a").
pub const PROMPT: [u32; 16] = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632, 438, 2016, 257];
pub const NEW_TOKENS: usize = 128;

/// The workload (`llmfs bench generate` and `cargo bench --bench generate` take these flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Timed repetitions (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Also time generation without the KV cache (and check it gives the same tokens)
    #[arg(long)]
    pub no_cache: bool,
    /// More than 1: batched against one at a time instead
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Also time the prefill of a prompt this long (the baseline's 16 tokens, repeated)
    #[arg(long)]
    pub prefill_len: Option<usize>,
    /// How the weights are kept (as `llmfs generate --dtype … --quantize …`)
    #[command(flatten)]
    pub weights: WeightArgs,
}

/// `preset`: the model shape (`gpt2` = 124M; a Llama-family preset such as `smollm2-135m`).
pub fn run(spec: DeviceSpec, preset: &str, options: &Options) -> Result<Value> {
    let device = spec.resolve()?;
    let model = options.weights.load(&crate::runs::ModelRef::resolve(&format!("random:{preset}")), &device, 0)?;
    // A shape with a shorter context (tiny) generates what fits after the prompt.
    let new_tokens = NEW_TOKENS.min(model.context_length().saturating_sub(PROMPT.len()));
    if options.batch > 1 {
        return batched_against_solo(&model, preset, options, new_tokens, spec);
    }
    let calib_before = calibrate(&device);
    // Warm-up over the whole length: a GPU backend's autotuning and kernel compilation meet every
    // cache length once, outside the timed runs.
    timed_generation(&model, new_tokens, true)?;
    let prefill = median((0..5).map(|_| timed_generation(&model, 1, true).map(|r| r.0)).collect::<Result<_>>()?);
    let long_prefill = match options.prefill_len {
        Some(len) => {
            let prompt: Vec<u32> = PROMPT.iter().copied().cycle().take(len).collect();
            timed_prompt(&model, &prompt, 1, true)?;
            Some(median((0..options.reps.max(1)).map(|_| timed_prompt(&model, &prompt, 1, true).map(|r| r.0)).collect::<Result<_>>()?))
        }
        None => None,
    };
    let runs: Vec<(f64, Vec<u32>)> = (0..options.reps.max(1)).map(|_| timed_generation(&model, new_tokens, true)).collect::<Result<_>>()?;
    let cached_s = median(runs.iter().map(|r| r.0).collect());
    let uncached = if options.no_cache { Some(timed_generation(&model, new_tokens, false)?) } else { None };
    if let Some((_, tokens)) = &uncached {
        ensure!(tokens == &runs[0].1, "cached and uncached greedy tokens differ");
    }
    let calib_after = calibrate(&device);
    Ok(json!({
        "bench": super::bench_name("generate", preset), "preset": preset, "backend": spec.to_string(),
        "threads": rayon::current_num_threads(), "dtype": options.weights.dtype, "quantize": options.weights.quantize.describe(), "batch": 1, "prompt_len": PROMPT.len(), "new_tokens": new_tokens,
        "prefill_16_tokens_plus_1_s": prefill,
        "prefill": long_prefill.map(|s| json!({ "prompt_len": options.prefill_len, "s": s, "tokens_per_s": options.prefill_len.unwrap_or(0) as f64 / s })),
        "kv_cache": { "median_s": cached_s, "all_s": runs.iter().map(|r| r.0).collect::<Vec<_>>(),
                      "tokens_per_s": new_tokens as f64 / cached_s },
        "no_cache": uncached.as_ref().map(|(s, _)| json!({ "s": s, "tokens_per_s": new_tokens as f64 / s })),
        "first_new_tokens": &runs[0].1[..runs[0].1.len().min(8)],
        "calib_gflops_before": calib_before,
        "calib_gflops_after": calib_after,
        "peak_rss_mib": super::peak_rss_mib(),
    }))
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
    2.0 * 1024.0 * 768.0 * 3072.0 / median(times) / 1e9
}

fn timed_generation(model: &LanguageModel, new_tokens: usize, use_cache: bool) -> Result<(f64, Vec<u32>)> {
    timed_prompt(model, &PROMPT, new_tokens, use_cache)
}

/// Seconds to generate `new_tokens` after `prompt` (ids only: random weights have no tokenizer), and the tokens.
fn timed_prompt(model: &LanguageModel, prompt: &[u32], new_tokens: usize, use_cache: bool) -> Result<(f64, Vec<u32>)> {
    let config = GenerateConfig { eos_tokens: vec![], use_cache, decode: false, ..GenerateConfig::greedy(new_tokens) };
    let start = Instant::now();
    let out = generate(model, &[prompt.to_vec()], &config)?;
    Ok((start.elapsed().as_secs_f64(), out[0].token_ids.clone()))
}

/// `batch` prompts (the baseline's, each with another last token) generated as one batch through
/// the KV cache and then one at a time (`generate-responses` and `serve` batch their prompts).
fn batched_against_solo(model: &LanguageModel, preset: &str, options: &Options, new_tokens: usize, spec: DeviceSpec) -> Result<Value> {
    let batch = options.batch;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|row| {
            let mut prompt = PROMPT.to_vec();
            prompt[PROMPT.len() - 1] = 257 + 13 * row as u32;
            prompt
        })
        .collect();
    let config = GenerateConfig { eos_tokens: vec![], decode: false, ..GenerateConfig::greedy(new_tokens) };
    // Warm-up of both ways over the whole length, as in `run` (on a GPU, the batch of 8 has its
    // own shapes to tune and compile).
    generate(model, &prompts, &config)?;
    generate(model, &prompts[..1], &config)?;
    let start = Instant::now();
    let batched = generate(model, &prompts, &config)?;
    let batched_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut solo = Vec::new();
    for prompt in &prompts {
        solo.push(generate(model, std::slice::from_ref(prompt), &config)?[0].token_ids.clone());
    }
    let solo_s = start.elapsed().as_secs_f64();
    for (row, (b, s)) in batched.iter().zip(&solo).enumerate() {
        ensure!(&b.token_ids == s, "row {row}: batched and solo tokens differ");
    }
    let tokens = (batch * new_tokens) as f64;
    Ok(json!({
        "bench": super::bench_name("generate_batched", preset), "preset": preset, "backend": spec.to_string(),
        "threads": rayon::current_num_threads(), "dtype": options.weights.dtype, "quantize": options.weights.quantize.describe(), "batch": batch, "prompt_len": PROMPT.len(), "new_tokens": new_tokens,
        "batched": { "s": batched_s, "tokens_per_s": tokens / batched_s },
        "one_at_a_time": { "s": solo_s, "tokens_per_s": tokens / solo_s },
        "speedup": solo_s / batched_s, "same_tokens": true,
    }))
}
