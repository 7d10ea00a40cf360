//! The log-likelihood of continuations given a context: `log P(continuation | context)` summed
//! over the continuation's tokens, and whether greedy decoding would have produced it — what
//! lm-evaluation-harness's `loglikelihood` returns, and what HellaSwag's ending losses are.
//!
//! A request is one context and the continuations scored after it. The context runs through the
//! model once; its keys and values (the KV cache, copied to one row per continuation) are what
//! the continuations attend to in a second pass. Only a continuation's tokens but its last go
//! through the model (the last is a target, never a predictor), so a row of `context + continuation`
//! tokens needs `len - 1` positions, as lm-eval's `(context + continuation)[:-1]`. The output head
//! runs on the scored positions only.

use std::borrow::Borrow;

use anyhow::{Result, ensure};
use gpt::burn::prelude::*;
use gpt::models::CausalLm;
use serde::Serialize;

use crate::train::cross_entropy_per_token;

/// A context and the continuations scored after it, as token ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuations: Vec<Vec<u32>>,
}

impl Request {
    /// The positions the model runs for this request's longest row.
    pub fn width(&self) -> usize {
        self.context.len() + self.continuations.iter().map(Vec::len).max().unwrap_or(1) - 1
    }
}

/// The score of one continuation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Loglikelihood {
    /// Summed log-probability (nats, ≤ 0) of the continuation's tokens.
    pub logprob: f64,
    /// The continuation's tokens.
    pub tokens: usize,
    /// Every token is the most likely one at its position (lm-eval's `is_greedy`).
    pub greedy: bool,
}

/// Scores a batch of requests: one `Vec` per request, one [`Loglikelihood`] per continuation.
/// Every context and continuation needs a token, and every row must fit the model's context
/// window (`context + continuation - 1` positions).
pub fn score_requests<R: Borrow<Request>>(model: &dyn CausalLm, batch: &[R]) -> Result<Vec<Vec<Loglikelihood>>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let window = model.context_length();
    for request in batch.iter().map(Borrow::borrow) {
        ensure!(!request.context.is_empty(), "a request has an empty context: nothing predicts its first token");
        ensure!(request.continuations.iter().all(|c| !c.is_empty()), "a request has a continuation without tokens");
    }
    let requests = batch.len();
    let ctx_width = batch.iter().map(|r| r.borrow().context.len()).max().unwrap_or(0);
    let end_width = batch.iter().flat_map(|r| r.borrow().continuations.iter().map(|c| c.len() - 1)).max().unwrap_or(0);
    ensure!(ctx_width + end_width <= window, "a batch row needs {} positions, more than the model's context of {window}", ctx_width + end_width);

    // Pass 1: the contexts, right-padded (padding is masked out and takes no position id).
    let (mut tokens, mut is_pad) = (Vec::with_capacity(requests * ctx_width), Vec::with_capacity(requests * ctx_width));
    for request in batch.iter().map(Borrow::borrow) {
        right_pad(&request.context, ctx_width, &mut tokens, &mut is_pad);
    }
    let mut cache = model.new_cache(requests);
    let context_states = model.forward_cached(&tokens, &is_pad, &mut cache)?;
    let c = context_states.dims()[2];
    let mut states = vec![context_states.reshape([requests * ctx_width, c])];

    // Pass 2: one row per continuation (its tokens but the last) after its context's cached positions.
    let rows: Vec<usize> = batch.iter().enumerate().flat_map(|(e, r)| std::iter::repeat_n(e, r.borrow().continuations.len())).collect();
    if end_width > 0 {
        cache.retain_rows(&rows);
        let (mut tokens, mut is_pad) = (Vec::with_capacity(rows.len() * end_width), Vec::with_capacity(rows.len() * end_width));
        for request in batch.iter().map(Borrow::borrow) {
            for continuation in &request.continuations {
                right_pad(&continuation[..continuation.len() - 1], end_width, &mut tokens, &mut is_pad);
            }
        }
        let continuation_states = model.forward_cached(&tokens, &is_pad, &mut cache)?;
        states.push(continuation_states.reshape([rows.len() * end_width, c]));
    }

    // The states that predict each continuation token, as rows of [context states; continuation
    // states]: the first token is predicted by the context's last position, token j by position j - 1.
    let continuation_offset = requests * ctx_width;
    let mut scored = ScoredPositions::default();
    let mut r = 0;
    for (e, request) in batch.iter().map(Borrow::borrow).enumerate() {
        for continuation in &request.continuations {
            let predictors = std::iter::once(e * ctx_width + request.context.len() - 1)
                .chain((0..continuation.len() - 1).map(|j| continuation_offset + r * end_width + j));
            scored.push_row(predictors, continuation);
            r += 1;
        }
    }
    let mut scores = scored.score(model, Tensor::cat(states, 0))?.into_iter();
    Ok(batch.iter().map(|r| scores.by_ref().take(r.borrow().continuations.len()).collect()).collect())
}

/// `row` then padding up to `width`, with the padding flags.
pub(crate) fn right_pad(row: &[u32], width: usize, tokens: &mut Vec<u32>, is_pad: &mut Vec<bool>) {
    tokens.extend(row.iter().copied().chain(std::iter::repeat_n(0, width - row.len())));
    is_pad.extend((0..width).map(|t| t >= row.len()));
}

/// The scoring of a batch: the states that predict each scored token (indices into a `[N, C]`
/// tensor of final hidden states) with their targets, row by row.
#[derive(Default)]
pub(crate) struct ScoredPositions {
    positions: Vec<i64>,
    targets: Vec<i64>,
    /// Scored tokens per row, in order.
    counts: Vec<usize>,
}

impl ScoredPositions {
    pub(crate) fn push_row(&mut self, predictors: impl Iterator<Item = usize>, targets: &[u32]) {
        let before = self.positions.len();
        for (position, &target) in predictors.zip(targets) {
            self.positions.push(position as i64);
            self.targets.push(target as i64);
        }
        self.counts.push(self.positions.len() - before);
    }

    /// The output head (the largest product of a small model) on the scored states only, then
    /// each row's summed log-probability and whether each of its targets is the argmax.
    pub(crate) fn score(self, model: &dyn CausalLm, states: Tensor<2>) -> Result<Vec<Loglikelihood>> {
        let device = model.device();
        let n = self.positions.len();
        let c = states.dims()[1];
        let picked = states.select(0, Tensor::<1, Int>::from_data(TensorData::new(self.positions, [n]), &device));
        let logits = model.head(picked.reshape([1, n, c]));
        let greedy: Vec<i64> = logits.clone().argmax(2).into_data().try_into_vec_as::<i64>().map_err(|e| anyhow::anyhow!("reading the argmax tokens: {e:?}"))?;
        let targets = Tensor::<2, Int>::from_data(TensorData::new(self.targets.clone(), [1, n]), &device);
        let nll: Vec<f32> = cross_entropy_per_token(logits, targets)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the losses: {e:?}"))?;

        let mut offset = 0;
        let mut scores = Vec::with_capacity(self.counts.len());
        for &count in &self.counts {
            let row = offset..offset + count;
            offset += count;
            scores.push(Loglikelihood {
                logprob: -nll[row.clone()].iter().map(|&l| l as f64).sum::<f64>(),
                tokens: count,
                greedy: greedy[row.clone()] == self.targets[row],
            });
        }
        Ok(scores)
    }
}
