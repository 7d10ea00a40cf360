//! HellaSwag scoring as build-nanogpt's `evaluate`: for each of the 4 endings, the cross-entropy
//! of the ending's tokens given everything before them; `pred` is the ending with the lowest
//! summed loss, `pred_norm` the one with the lowest mean loss (per token); `acc` and `acc_norm`
//! are their accuracies.
//!
//! Several examples share a forward pass (examples of similar length, to pad little): their 4 rows
//! each are right-padded with token 0 to the longest row of the batch. Attention is causal, so padding after a row's tokens cannot change
//! the hidden states of the tokens before it; only positions that predict an ending token are
//! scored. The output head (the largest product of a small model) runs on those positions only.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use pipelines::data::hellaswag::{DEFAULT_DATA_DIR, DEFAULT_URL, Split, download_split, read_examples};
//! use pipelines::eval::hellaswag::evaluate;
//! let device = gpt::DeviceSpec::Auto.resolve()?;
//! let model = gpt::weights::load_model("gpt2", &device, 0)?;
//! let path = download_split(DEFAULT_URL, std::path::Path::new(DEFAULT_DATA_DIR), Split::Val)?;
//! let batch_size = pipelines::eval::hellaswag::default_batch_size(&device);
//! let scores = evaluate(&model, &read_examples(&path)?, batch_size, |_done| {})?;
//! println!("acc {:.4} acc_norm {:.4}", scores.acc, scores.acc_norm);
//! # Ok(()) }
//! ```

use std::borrow::Borrow;

use anyhow::{Context, Result, ensure};
use gpt::burn::prelude::*;
use gpt::burn::tensor::activation::log_softmax;
use gpt::{Gpt, Tokenizer};
use serde::Serialize;

use crate::data::hellaswag::{Example, NUM_ENDINGS, RenderedExample, render_example};

/// Examples per forward pass (4 rows each) on a GPU.
pub const GPU_BATCH_SIZE: usize = 8;

/// A good number of examples per forward pass on `device`: 1 on the CPU backend, where bigger
/// batches were slower (GPT-2 124M, 2 threads: 110 s for 40 examples one at a time, 131 s eight
/// at a time; the activations of a batch outgrow the caches), else [`GPU_BATCH_SIZE`].
pub fn default_batch_size(device: &Device) -> usize {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return 1;
    }
    let _ = device;
    GPU_BATCH_SIZE
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
pub fn evaluate(model: &Gpt, examples: &[Example], batch_size: usize, mut progress: impl FnMut(usize)) -> Result<HellaswagScores> {
    ensure!(batch_size > 0, "the batch size must be at least 1");
    let model = model.valid();
    let tokenizer = Tokenizer::gpt2();
    let context = model.config().n_positions;
    let rendered: Vec<RenderedExample> = examples.iter().map(|e| render_example(&tokenizer, e)).collect();
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

/// The ending losses of a batch of rendered examples, in one forward pass of `4 × batch` rows
/// zero-padded to the longest. As build-nanogpt (logits and targets shifted by one), the token at
/// position `t` of an ending is scored by the logits at `t - 1`; a row's first token is never scored.
pub fn score_batch<R: Borrow<RenderedExample>>(model: &Gpt, batch: &[R]) -> Result<Vec<EndingLosses>> {
    let Some(width) = batch.iter().map(|r| r.borrow().width()).max() else {
        return Ok(Vec::new());
    };
    let context = model.config().n_positions;
    ensure!(width <= context, "a batch row has {width} tokens, more than the model's context of {context}");
    let rows = NUM_ENDINGS * batch.len();
    let mut ids = vec![0i64; rows * width];
    // Flat index (row * width + t - 1) of every position that predicts an ending token t, its
    // target, and how many such positions each row has (they are consecutive, row by row).
    let (mut positions, mut targets, mut counts) = (Vec::new(), Vec::new(), Vec::with_capacity(rows));
    for (e, example) in batch.iter().map(Borrow::borrow).enumerate() {
        let start = example.ctx_tokens.len();
        for (i, row) in example.tokens.iter().enumerate() {
            let r = NUM_ENDINGS * e + i;
            for (slot, &token) in ids[r * width..].iter_mut().zip(row) {
                *slot = token as i64;
            }
            let scored = start.max(1)..start + example.ending_tokens[i].len();
            ensure!(!scored.is_empty(), "ending {i} of a batch example has no token to score (empty context and a one-token ending)");
            counts.push(scored.len());
            for t in scored {
                positions.push((r * width + t - 1) as i64);
                targets.push(row[t] as i64);
            }
        }
    }

    let device = model.device();
    let n = positions.len();
    let hidden = model.hidden(Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, width]), &device));
    let c = hidden.dims()[2];
    let picked = hidden.reshape([rows * width, c]).select(0, Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device));
    let log_probs = log_softmax(model.head(picked.reshape([1, n, c])), 2);
    let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [1, n, 1]), &device);
    let nll: Vec<f32> = log_probs
        .gather(2, targets)
        .neg()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the HellaSwag losses: {e:?}"))?;

    let mut losses = Vec::with_capacity(batch.len());
    let mut row_losses = counts.iter().scan(0, |offset, &count| {
        let row = &nll[*offset..*offset + count];
        *offset += count;
        Some((row.iter().map(|&l| l as f64).sum::<f64>(), count))
    });
    for _ in batch {
        let mut ending = EndingLosses { sum: [0.0; NUM_ENDINGS], mean: [0.0; NUM_ENDINGS] };
        for i in 0..NUM_ENDINGS {
            let (sum, count) = row_losses.next().context("one loss per row")?;
            ending.sum[i] = sum;
            ending.mean[i] = sum / count as f64;
        }
        losses.push(ending);
    }
    Ok(losses)
}
