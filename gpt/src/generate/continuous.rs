//! Continuous batching: one running decode batch that requests join and leave between steps.
//!
//! A joining request is prefilled alone (its own KV cache), then its cache rows are appended to
//! the running batch's (the shorter side padded on the left, which is masked out and takes no
//! position id); every step decodes all running rows in one forward pass; a finished or
//! cancelled row leaves at once (its cache rows are dropped). Each row keeps its own sampling
//! settings, seed, stop strings and length limit, and produces exactly what
//! [`generate`](crate::generate::generate) would produce for it alone.
//!
//! ```no_run
//! # use gpt::{generate::{ContinuousBatch, GenerateConfig}, Gpt};
//! # fn demo(model: &Gpt, a: Vec<u32>, b: Vec<u32>) -> gpt::Result<()> {
//! let mut batch = ContinuousBatch::new(model, 8);
//! batch.admit(1, &a, &GenerateConfig::greedy(20))?; // false: no room yet, try after a step
//! while !batch.is_empty() {
//!     let step = batch.step()?;              // (request id, token, text) of every row
//!     for (id, completion) in batch.take_finished() { /* ... */ }
//! #   let _ = (step, &b);
//! }
//! # Ok(()) }
//! ```

use super::{Completion, GenerateConfig, Row, checked_prompt, logits_at};
use crate::error::{GptError, Result};
use crate::models::CausalLm;
use crate::models::kv_cache::KvCache;

/// A request's id (the caller's), chosen when it is admitted.
pub type RequestId = u64;

/// One token a step produced for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestToken {
    pub id: RequestId,
    pub token: u32,
    /// Text that became final with this token (see [`crate::generate::StepToken`]).
    pub text: String,
}

struct Running {
    id: RequestId,
    row: Row,
    config: GenerateConfig,
    /// Logits `[vocab]` for this row's next token.
    logits: Vec<f32>,
}

/// The running batch: rows in the order of the cache's rows.
pub struct ContinuousBatch<'m> {
    model: &'m dyn CausalLm,
    max_rows: usize,
    running: Vec<Running>,
    finished: Vec<(RequestId, Completion)>,
    cache: Option<KvCache>,
}

impl<'m> ContinuousBatch<'m> {
    /// An empty batch that holds at most `max_rows` requests at once.
    pub fn new(model: &'m dyn CausalLm, max_rows: usize) -> Self {
        Self { model, max_rows: max_rows.max(1), running: Vec::new(), finished: Vec::new(), cache: None }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn model(&self) -> &'m dyn CausalLm {
        self.model
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// No request is running (finished ones may still wait in [`take_finished`](Self::take_finished)).
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether a request with this prompt length and token budget can join now. The batch's
    /// cache is as long as its longest row; a row joining it must, like every running row, have
    /// room for all its remaining tokens in the context window. When not, it waits for rows to
    /// leave (an empty batch takes any valid request).
    pub fn can_admit(&self, prompt_len: usize, max_new_tokens: usize) -> bool {
        if self.running.is_empty() {
            return true;
        }
        if self.running.len() >= self.max_rows {
            return false;
        }
        let len = self.cache.as_ref().map_or(0, KvCache::len).max(prompt_len.max(1));
        let remaining = self.running.iter().map(|r| r.config.max_new_tokens.saturating_sub(r.row.tokens_len())).chain([max_new_tokens]).max().unwrap_or(0);
        len + remaining <= self.model.context_length()
    }

    /// Prefills `prompt` alone and adds it to the batch: `Ok(false)` when it cannot join now
    /// (see [`can_admit`](Self::can_admit); try again after a step), an error when the request
    /// itself is bad (settings, token ids). Either way the batch goes on.
    pub fn admit(&mut self, id: RequestId, prompt: &[u32], config: &GenerateConfig) -> Result<bool> {
        let prompt = checked_prompt(self.model, 0, prompt, config)?;
        if !self.can_admit(prompt.len(), config.max_new_tokens) {
            return Ok(false);
        }
        let row = Row::new(prompt, config.seed);
        if config.max_new_tokens == 0 {
            self.finished.push((id, row.into_completion()));
            return Ok(true);
        }
        let mut cache = self.model.new_cache(1);
        let hidden = self.model.forward_cached(&row.prompt, &vec![false; row.prompt.len()], &mut cache)?;
        let logits = logits_at(self.model, hidden, &[row.prompt.len() - 1])?;
        match &mut self.cache {
            Some(running) if !self.running.is_empty() => running.append_rows(cache),
            _ => self.cache = Some(cache),
        }
        self.running.push(Running { id, row, config: config.clone(), logits });
        Ok(true)
    }

    /// Drops a request (its client went away); its tokens so far are discarded.
    pub fn cancel(&mut self, id: RequestId) {
        if let Some(index) = self.running.iter().position(|r| r.id == id) {
            self.remove_rows(&[index]);
        }
    }

    /// One token for every running row: sampled from its logits, then the rows still going are
    /// decoded one position further in a single forward pass. Finished rows leave the batch and
    /// wait in [`take_finished`](Self::take_finished).
    pub fn step(&mut self) -> Result<Vec<RequestToken>> {
        let mut produced = Vec::with_capacity(self.running.len());
        for running in &mut self.running {
            let (token, text) = running.row.take_token(&running.logits, &running.config)?;
            produced.push(RequestToken { id: running.id, token, text });
        }
        // The rows still going, in batch order, are fed the tokens they just produced.
        let tokens: Vec<u32> =
            self.running.iter().zip(&produced).filter(|(r, _)| r.row.finish.is_none()).map(|(_, p)| p.token).collect();
        let done: Vec<usize> = (0..self.running.len()).filter(|&i| self.running[i].row.finish.is_some()).collect();
        self.remove_rows(&done);
        if self.running.is_empty() {
            return Ok(produced);
        }
        let cache = self.cache.as_mut().ok_or_else(|| GptError::Generation("the KV cache is missing".into()))?;
        let hidden = self.model.forward_cached(&tokens, &vec![false; tokens.len()], cache)?;
        let logits = logits_at(self.model, hidden, &vec![0; tokens.len()])?;
        let vocab = self.model.vocab_size();
        for (running, logits) in self.running.iter_mut().zip(logits.chunks(vocab)) {
            running.logits = logits.to_vec();
        }
        Ok(produced)
    }

    /// The requests that finished since the last call, with their completions.
    pub fn take_finished(&mut self) -> Vec<(RequestId, Completion)> {
        std::mem::take(&mut self.finished)
    }

    /// Removes rows (indices into `running`, ascending) from the batch and the cache; finished
    /// ones go to `finished`.
    fn remove_rows(&mut self, indices: &[usize]) {
        if indices.is_empty() {
            return;
        }
        let keep: Vec<usize> = (0..self.running.len()).filter(|i| !indices.contains(i)).collect();
        if let Some(cache) = &mut self.cache {
            cache.retain_rows(&keep);
        }
        let mut removed = Vec::with_capacity(indices.len());
        for &index in indices.iter().rev() {
            removed.push(self.running.remove(index));
        }
        // In batch order, so that completions come out in the order of the rows.
        for running in removed.into_iter().rev().filter(|r| r.row.finish.is_some()) {
            self.finished.push((running.id, running.row.into_completion()));
        }
    }
}
