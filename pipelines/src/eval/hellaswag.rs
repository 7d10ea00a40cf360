//! HellaSwag scoring as build-nanogpt's `evaluate`: for each of the 4 endings, the cross-entropy
//! of the ending's tokens given everything before them; `pred` is the ending with the lowest
//! summed loss, `pred_norm` the one with the lowest mean loss (per token); `acc` and `acc_norm`
//! are their accuracies.
//!
//! The 4 rows of an example share its context: the context runs through the model once and the 4
//! endings attend to its cached keys and values ([`score_batch`]), instead of 4 whole rows
//! ([`score_full_rows`], build-nanogpt's way, kept as the reference). Several examples can share a
//! pass (examples of similar length, right-padded; padding is masked out and never scored), and the
//! output head (the largest product of a small model) runs on the scored positions only.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use pipelines::data::hellaswag::{DEFAULT_DATA_DIR, DEFAULT_URL, Split, download_split, read_examples};
//! use pipelines::eval::hellaswag::evaluate;
//! let device = gpt::DeviceSpec::Auto.resolve()?;
//! let model = gpt::hf::load_model("gpt2", &device, 0)?;
//! let path = download_split(DEFAULT_URL, std::path::Path::new(DEFAULT_DATA_DIR), Split::Val)?;
//! let batch_size = pipelines::eval::hellaswag::default_batch_size(&device);
//! let scores = evaluate(&model, &read_examples(&path)?, batch_size, |_done| {})?;
//! println!("acc {:.4} acc_norm {:.4}", scores.acc, scores.acc_norm);
//! # Ok(()) }
//! ```

use std::borrow::Borrow;

use anyhow::{Context, Result, ensure};
use gpt::burn::prelude::*;
use gpt::Tokenizer;
use gpt::burn::module::Module;
use gpt::models::CausalLm;
use serde::Serialize;

use crate::data::hellaswag::{Example, NUM_ENDINGS, RenderedExample, render_example};
use super::loglikelihood::{Loglikelihood, Request, ScoredPositions, score_requests};

/// Examples per forward pass (4 rows each) on a GPU.
pub const GPU_BATCH_SIZE: usize = 8;

/// A good number of examples per forward pass on `device`: 1 on the CPU backend, where bigger
/// batches are slower (the activations of a batch outgrow the caches; README, "Speed"), else
/// [`GPU_BATCH_SIZE`].
pub fn default_batch_size(device: &Device) -> usize {
    if gpt::backend::is_flex(device) { 1 } else { GPU_BATCH_SIZE }
}

/// The losses of an example's endings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndingLosses {
    /// Summed cross-entropy (nats) of each ending's tokens.
    pub sum: [f64; NUM_ENDINGS],
    /// `sum` divided by the number of the ending's scored tokens.
    pub mean: [f64; NUM_ENDINGS],
}

impl EndingLosses {
    /// The ending with the lowest summed loss (the first of equals, as `torch.argmin`).
    pub fn pred(&self) -> usize {
        argmin(&self.sum)
    }

    /// The ending with the lowest mean loss.
    pub fn pred_norm(&self) -> usize {
        argmin(&self.mean)
    }
}

fn argmin(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v < values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// One scored example.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The example's `ind`.
    pub ind: u64,
    pub label: usize,
    pub pred: usize,
    pub pred_norm: usize,
    pub losses: EndingLosses,
}

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HellaswagScores {
    pub n: usize,
    /// Examples whose `pred` is the label.
    pub num_correct: usize,
    /// Examples whose `pred_norm` is the label.
    pub num_correct_norm: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// One per example, in the order of the input.
    pub predictions: Vec<Prediction>,
}

/// Scores `examples` with `model`, `batch_size` examples per forward pass; `progress` is called
/// with the number of examples done after each batch. The model runs in inference mode (a model on
/// an autodiff device is evaluated through its `valid()` copy). Every example needs a label, and
/// each of its rows must fit the model's context window: both are checked before any scoring.
///
/// Batches are formed from examples of similar length, longest first (little padding, and a batch
/// too big for the device fails at once); the predictions come back in the order of `examples`.
pub fn evaluate<M: CausalLm + Module>(model: &M, examples: &[Example], batch_size: usize, progress: impl FnMut(usize)) -> Result<HellaswagScores> {
    evaluate_with(model, &Tokenizer::gpt2(), examples, batch_size, progress)
}

/// [`evaluate`] with the model's own tokenizer (a Llama-family model's; no special tokens are
/// added, as lm-evaluation-harness does by default).
pub fn evaluate_with<M: CausalLm + Module>(
    model: &M,
    tokenizer: &Tokenizer,
    examples: &[Example],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<HellaswagScores> {
    ensure!(batch_size > 0, "the batch size must be at least 1");
    let model = model.valid();
    let context = model.context_length();
    let rendered: Vec<RenderedExample> = examples.iter().map(|e| render_example(tokenizer, e)).collect();
    let mut labels = Vec::with_capacity(examples.len());
    for (example, render) in examples.iter().zip(&rendered) {
        let at = || format!("the example on line {} (ind {})", example.line, example.ind);
        ensure!(render.width() <= context, "{} has {} tokens, more than the model's context of {context}", at(), render.width());
        let unscorable = render.ctx_tokens.is_empty() && render.ending_tokens.iter().any(|e| e.len() < 2);
        ensure!(!unscorable, "{} has an empty context and a one-token ending: nothing predicts that token", at());
        labels.push(example.label.with_context(|| format!("{} has no label (the test split's are not public)", at()))?);
    }

    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rendered[i].width())); // stable: equal widths keep file order
    let mut losses: Vec<Option<EndingLosses>> = vec![None; examples.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size) {
        let batch: Vec<&RenderedExample> = chunk.iter().map(|&i| &rendered[i]).collect();
        for (&i, scored) in chunk.iter().zip(score_batch(&model, &batch)?) {
            losses[i] = Some(scored);
        }
        done += chunk.len();
        progress(done);
    }

    let mut predictions = Vec::with_capacity(examples.len());
    for ((example, label), losses) in examples.iter().zip(labels).zip(losses) {
        let losses = losses.context("every example is in one batch")?;
        predictions.push(Prediction { ind: example.ind, label, pred: losses.pred(), pred_norm: losses.pred_norm(), losses });
    }
    let n = predictions.len();
    let num_correct = predictions.iter().filter(|p| p.pred == p.label).count();
    let num_correct_norm = predictions.iter().filter(|p| p.pred_norm == p.label).count();
    let fraction = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
    Ok(HellaswagScores { n, num_correct, num_correct_norm, acc: fraction(num_correct), acc_norm: fraction(num_correct_norm), predictions })
}

/// The ending losses of a batch of rendered examples. The 4 rows of an example share its context,
/// so the context runs through the model once, and its keys and values (the KV cache, copied to the
/// 4 rows) are what the 4 endings attend to in a second pass ([`score_requests`]): about half the
/// positions of running every row whole (HellaSwag's contexts are longer than its endings), the
/// same numbers up to float rounding. An example without context is scored by [`score_full_rows`].
pub fn score_batch<R: Borrow<RenderedExample>>(model: &dyn CausalLm, batch: &[R]) -> Result<Vec<EndingLosses>> {
    if batch.iter().any(|r| r.borrow().ctx_tokens.is_empty()) {
        return score_full_rows(model, batch);
    }
    let requests: Vec<Request> = batch
        .iter()
        .map(Borrow::borrow)
        .map(|r| Request { context: r.ctx_tokens.clone(), continuations: r.ending_tokens.to_vec() })
        .collect();
    Ok(score_requests(model, &requests)?.into_iter().map(|scores| ending_losses(&scores)).collect())
}

/// An example's ending losses from the log-likelihoods of its endings.
fn ending_losses(scores: &[Loglikelihood]) -> EndingLosses {
    let mut losses = EndingLosses { sum: [0.0; NUM_ENDINGS], mean: [0.0; NUM_ENDINGS] };
    for (i, score) in scores.iter().enumerate().take(NUM_ENDINGS) {
        losses.sum[i] = -score.logprob;
        losses.mean[i] = -score.logprob / score.tokens as f64;
    }
    losses
}

/// The ending losses of a batch as build-nanogpt computes them: one forward pass of `4 × batch`
/// whole rows (context + ending) zero-padded to the longest. As there (logits and targets shifted
/// by one), the token at position `t` of an ending is scored by the state at `t - 1`; a row's first
/// token is never scored.
pub fn score_full_rows<R: Borrow<RenderedExample>>(model: &dyn CausalLm, batch: &[R]) -> Result<Vec<EndingLosses>> {
    let Some(width) = batch.iter().map(|r| r.borrow().width()).max() else {
        return Ok(Vec::new());
    };
    let context = model.context_length();
    ensure!(width <= context, "a batch row has {width} tokens, more than the model's context of {context}");
    let rows = NUM_ENDINGS * batch.len();
    let mut ids = vec![0i64; rows * width];
    let mut scored = ScoredPositions::default();
    for (e, example) in batch.iter().map(Borrow::borrow).enumerate() {
        let start = example.ctx_tokens.len();
        for (i, row) in example.tokens.iter().enumerate() {
            let r = NUM_ENDINGS * e + i;
            for (slot, &token) in ids[r * width..].iter_mut().zip(row) {
                *slot = token as i64;
            }
            let first = start.max(1);
            let end = start + example.ending_tokens[i].len();
            ensure!(first < end, "ending {i} of a batch example has no token to score (empty context and a one-token ending)");
            scored.push_row((first..end).map(|t| r * width + t - 1), &row[first..end]);
        }
    }
    let device = model.device();
    let hidden = model.hidden(Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, width]), &device));
    let c = hidden.dims()[2];
    let scores = scored.score(model, hidden.reshape([rows * width, c]))?;
    Ok(scores.chunks(NUM_ENDINGS).map(ending_losses).collect())
}
