//! HellaSwag scoring speed on the GPT-2 124M shape (random fp32 weights): examples per second of
//! `llmfs eval hellaswag` (each context run once for its 4 endings, the head on the scored positions
//! only) and of build-nanogpt's way (4 whole rows per example) on the same examples, with the
//! largest difference between their losses. `scripts/bench-hellaswag.sh` runs PyTorch +
//! transformers on the same rows next to it.

use std::time::Instant;

use anyhow::{Context, Result};
use gpt::backend::DeviceSpec;
use gpt::{Gpt, GptConfig, Tokenizer};
use serde_json::{Value, json};

use crate::data::hellaswag::{RenderedExample, read_examples, render_example};
use crate::eval::hellaswag::{EndingLosses, evaluate, score_full_rows};

/// The workload (`llmfs bench hellaswag` takes these flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A HellaSwag jsonl file
    #[arg(long, default_value = "tests/fixtures/data/hellaswag_val_40.jsonl")]
    pub data: std::path::PathBuf,
    /// Only the first N examples
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per forward pass
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
}

pub fn run(spec: DeviceSpec, options: &Options) -> Result<Value> {
    let device = spec.resolve()?;
    let model = Gpt::init(&GptConfig::preset("gpt2").context("the gpt2 preset")?.with_dropout(0.0), 0, &device)?;
    let mut examples = read_examples(&options.data)?;
    examples.truncate(options.limit.unwrap_or(usize::MAX));
    let n = examples.len();
    let tokenizer = Tokenizer::gpt2();
    let rendered: Vec<RenderedExample> = examples.iter().map(|e| render_example(&tokenizer, e)).collect();
    evaluate(&model, &examples[..n.min(2)], 1, |_| {})?; // warm-up

    let start = Instant::now();
    let scores = evaluate(&model, &examples, options.batch_size, |_| {})?;
    let shared_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let whole_rows: Vec<EndingLosses> = rendered.iter().map(|r| score_full_rows(&model, &[r]).map(|mut l| l.remove(0))).collect::<Result<_>>()?;
    let whole_rows_s = start.elapsed().as_secs_f64();

    let max_rel_diff = scores
        .predictions
        .iter()
        .zip(&whole_rows)
        .flat_map(|(p, w)| p.losses.sum.iter().zip(&w.sum).map(|(a, b)| (a - b).abs() / b.abs().max(1e-12)))
        .fold(0.0, f64::max);
    let positions = |r: &RenderedExample| (r.ctx_tokens.len(), r.ending_tokens.iter().map(Vec::len).sum::<usize>());
    let (context_tokens, ending_tokens) = rendered.iter().map(positions).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    Ok(json!({
        "bench": "llmfs_hellaswag_gpt2_124m", "backend": spec.to_string(), "threads": rayon::current_num_threads(),
        "examples": n, "batch_size": options.batch_size,
        "context_tokens": context_tokens, "ending_tokens": ending_tokens,
        "shared_context": { "s": shared_s, "examples_per_s": n as f64 / shared_s },
        "whole_rows": { "s": whole_rows_s, "examples_per_s": n as f64 / whole_rows_s },
        "losses_max_rel_diff": max_rel_diff,
        "acc": scores.acc, "acc_norm": scores.acc_norm,
    }))
}
