//! Text generation: a batch of prompts, a KV cache (prefill once, then one position per step),
//! greedy or sampled tokens, stop at end-of-text or stop strings, streamed token by token.
//!
//! ```no_run
//! # use gpt::{generate::{GenerateConfig, generate}, Gpt, Tokenizer};
//! # fn demo(model: &Gpt) -> gpt::Result<()> {
//! let tokenizer = Tokenizer::gpt2();
//! let prompt = tokenizer.encode("Every effort moves you");
//! let out = generate(model, &[prompt], &GenerateConfig::greedy(20))?;
//! println!("{}", out[0].text);
//! # Ok(()) }
//! ```

pub mod continuous;
pub mod sampling;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backend::on_cpu_workers;
use crate::error::{GptError, Result};
use crate::models::CausalLm;
use crate::models::kv_cache::KvCache;
use crate::text::{StreamDecoder, Tokenizer};

pub use continuous::ContinuousBatch;
pub use sampling::Sampling;

/// Which side of a shorter prompt the padding goes in a batch. Both give every row exactly what
/// it would generate alone: padding is masked out and does not shift position ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    #[default]
    Left,
    Right,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seed of the sampler (row i of a batch uses `seed + i`).
    pub seed: u64,
    /// Stop a row when it produces one of these tokens (empty: never stop early).
    pub eos_tokens: Vec<u32>,
    /// Stop a row when its text contains one of these; the text is cut before it.
    pub stop: Vec<String>,
    pub padding: Padding,
    /// Recompute the whole sequence every step instead of using the KV cache (a reference path).
    pub use_cache: bool,
    /// Turns tokens into text (and gives the padding and start tokens): the model's own.
    pub tokenizer: Tokenizer,
    /// Decode the new tokens into text (false: token ids only, for a model without a tokenizer,
    /// e.g. the random-weight presets of benchmarks; no stop strings then).
    pub decode: bool,
}

impl GenerateConfig {
    /// Greedy decoding with GPT-2's tokenizer, stopping at `<|endoftext|>`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        let tokenizer = Tokenizer::gpt2();
        Self {
            max_new_tokens,
            sampling: Sampling::GREEDY,
            seed: 0,
            eos_tokens: tokenizer.eos_ids(),
            stop: Vec::new(),
            padding: Padding::Left,
            use_cache: true,
            tokenizer,
            decode: true,
        }
    }

    /// Decodes with `tokenizer` and stops at its end-of-sequence ids.
    pub fn with_tokenizer(mut self, tokenizer: &Tokenizer) -> Self {
        self.eos_tokens = tokenizer.eos_ids();
        self.tokenizer = tokenizer.clone();
        self
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced the end-of-text token.
    Eos,
    /// It produced a stop string.
    Stop,
    /// It reached `max_new_tokens`.
    Length,
}

impl FinishReason {
    /// OpenAI's names: `stop` for end-of-text and stop strings, `length` otherwise.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eos | Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// The result for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The prompt as the model saw it (after any truncation to the context window).
    pub prompt_ids: Vec<u32>,
    /// New tokens, without the end-of-text token that stopped the row.
    pub token_ids: Vec<u32>,
    /// Decoded new text, cut before a stop string.
    pub text: String,
    pub finish_reason: FinishReason,
}

/// What one row produced in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepToken {
    pub row: usize,
    pub token: u32,
    /// Text that became final with this token (may be empty: part of a UTF-8 character, or held
    /// back because it could be the start of a stop string).
    pub text: String,
}

/// One sequence being generated: its tokens, its text so far and how much of it was streamed.
pub(crate) struct Row {
    pub(crate) prompt: Vec<u32>,
    tokens: Vec<u32>,
    decoder: StreamDecoder,
    text: String,
    emitted: usize,
    rng: StdRng,
    pub(crate) finish: Option<FinishReason>,
}

impl Row {
    pub(crate) fn new(prompt: Vec<u32>, seed: u64) -> Self {
        Self {
            prompt,
            tokens: Vec::new(),
            decoder: StreamDecoder::new(),
            text: String::new(),
            emitted: 0,
            rng: StdRng::seed_from_u64(seed),
            finish: None,
        }
    }

    /// Picks the next token from `logits` (`[vocab]`) with `config`'s sampling, records it, and
    /// returns it with the text that became final (stop strings and end-of-text end the row).
    pub(crate) fn take_token(&mut self, logits: &[f32], config: &GenerateConfig) -> Result<(u32, String)> {
        let tokenizer = &config.tokenizer;
        let token = config.sampling.pick(logits, &mut self.rng);
        let last_step = self.tokens.len() + 1 == config.max_new_tokens;
        if config.eos_tokens.contains(&token) {
            self.finish = Some(FinishReason::Eos);
        } else if !config.decode {
            self.tokens.push(token);
            if last_step {
                self.finish = Some(FinishReason::Length);
            }
        } else {
            self.tokens.push(token);
            self.text.push_str(&self.decoder.push(tokenizer, token)?);
            if let Some(cut) = config.stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
                self.text.truncate(cut);
                self.finish = Some(FinishReason::Stop);
            } else if last_step {
                self.finish = Some(FinishReason::Length);
            }
        }
        if matches!(self.finish, Some(FinishReason::Eos | FinishReason::Length)) {
            self.text.push_str(&self.decoder.finish(tokenizer));
        }
        // While the row runs, hold back a tail that could still grow into a stop string.
        let safe = if self.finish.is_some() { self.text.len() } else { stop_safe_len(&self.text, &config.stop) };
        let text = self.text[self.emitted.min(safe)..safe].to_string();
        self.emitted = self.emitted.max(safe);
        Ok((token, text))
    }

    /// New tokens so far.
    pub(crate) fn tokens_len(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn into_completion(self) -> Completion {
        Completion {
            prompt_ids: self.prompt,
            token_ids: self.tokens,
            text: self.text,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
        }
    }
}

/// A running generation: an iterator that yields, at each step, the token of every row still
/// going. Collect it with [`TokenStream::finish`] or use [`generate`].
pub struct TokenStream<'m> {
    model: &'m dyn CausalLm,
    config: GenerateConfig,
    rows: Vec<Row>,
    cache: Option<KvCache>,
    /// Logits `[B * vocab]` for the next token of every row.
    logits: Option<Vec<f32>>,
    steps: usize,
}

/// Checks `config` and prompt number `i` against the model, and returns the prompt cut to fit.
pub(crate) fn checked_prompt(model: &dyn CausalLm, i: usize, prompt: &[u32], config: &GenerateConfig) -> Result<Vec<u32>> {
    config.sampling.validate()?;
    let n_positions = model.context_length();
    if config.stop.iter().any(String::is_empty) {
        return Err(GptError::Generation("stop strings must not be empty".into()));
    }
    if !config.decode && !config.stop.is_empty() {
        return Err(GptError::Generation("stop strings need decoded text (decode = false)".into()));
    }
    if config.max_new_tokens >= n_positions {
        return Err(GptError::Generation(format!(
            "max_new_tokens {} must be smaller than the context window ({n_positions})",
            config.max_new_tokens
        )));
    }
    let vocab = model.vocab_size();
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(GptError::Generation(format!("prompt {i}: token id {bad} is outside the vocabulary ({vocab})")));
    }
    if prompt.is_empty() {
        // A model needs at least one token to condition on: start from the tokenizer's beginning
        // of sequence (GPT-2: end-of-text), as HF does.
        return Ok(vec![config.tokenizer.start_id()]);
    }
    Ok(fit_prompt(prompt, config.max_new_tokens, n_positions))
}

/// Cuts `prompt` so that it and `max_new_tokens` fit the context window, keeping its end.
fn fit_prompt(prompt: &[u32], max_new_tokens: usize, n_positions: usize) -> Vec<u32> {
    let room = n_positions - max_new_tokens;
    if prompt.len() > room {
        eprintln!(
            "warning: the prompt has {} tokens; with max_new_tokens = {max_new_tokens} only the last {room} fit the \
             context window of {n_positions}, so the first {} are dropped",
            prompt.len(),
            prompt.len() - room
        );
        return prompt[prompt.len() - room..].to_vec();
    }
    prompt.to_vec()
}

/// The logits at `positions` (one per row) of `tokens` run through `model` with `cache`, on the CPU
/// kernels' worker threads ([`on_cpu_workers`]).
fn cached_logits(model: &dyn CausalLm, tokens: &[u32], is_pad: &[bool], cache: &mut KvCache, positions: &[usize]) -> Result<Vec<f32>> {
    on_cpu_workers(&model.device(), || {
        let hidden = model.forward_cached(tokens, is_pad, cache)?;
        logits_at(model, hidden, positions)
    })
}

impl<'m> TokenStream<'m> {
    pub fn new(model: &'m dyn CausalLm, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Self> {
        if prompts.is_empty() {
            return Err(GptError::Generation("no prompts given".into()));
        }
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| Ok(Row::new(checked_prompt(model, i, prompt, config)?, config.seed.wrapping_add(i as u64))))
            .collect::<Result<Vec<_>>>()?;
        let mut stream = Self {
            model,
            config: config.clone(),
            rows,
            cache: None,
            logits: None,
            steps: 0,
        };
        if config.max_new_tokens > 0 {
            stream.logits = Some(if config.use_cache { stream.prefill()? } else { stream.recompute()? });
        }
        Ok(stream)
    }

    /// Runs all prompts, padded into one `[B, T]` batch, through the model and fills the cache.
    fn prefill(&mut self) -> Result<Vec<f32>> {
        let b = self.rows.len();
        let t = self.rows.iter().map(|r| r.prompt.len()).max().unwrap_or(1);
        let mut tokens = Vec::with_capacity(b * t);
        let mut is_pad = Vec::with_capacity(b * t);
        let mut last_real = Vec::with_capacity(b);
        for row in &self.rows {
            let pad = t - row.prompt.len();
            let padding = std::iter::repeat_n((self.config.tokenizer.pad_id(), true), pad);
            let real = row.prompt.iter().map(|&id| (id, false));
            let ordered: Vec<(u32, bool)> = match self.config.padding {
                Padding::Left => padding.chain(real).collect(),
                Padding::Right => real.chain(padding).collect(),
            };
            tokens.extend(ordered.iter().map(|p| p.0));
            is_pad.extend(ordered.iter().map(|p| p.1));
            last_real.push(match self.config.padding {
                Padding::Left => t - 1,
                Padding::Right => row.prompt.len() - 1,
            });
        }
        let mut cache = self.model.new_cache(b);
        let logits = cached_logits(self.model, &tokens, &is_pad, &mut cache, &last_real)?;
        self.cache = Some(cache);
        Ok(logits)
    }

    /// The reference path: every unfinished row's whole sequence through the plain forward pass.
    fn recompute(&self) -> Result<Vec<f32>> {
        let vocab = self.model.vocab_size();
        let device = self.model.device();
        let mut out = vec![0.0; self.rows.len() * vocab];
        for (i, row) in self.rows.iter().enumerate().filter(|(_, r)| r.finish.is_none()) {
            let ids: Vec<i64> = row.prompt.iter().chain(&row.tokens).map(|&t| t as i64).collect();
            let n = ids.len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
            let hidden = self.model.hidden(ids).slice(s![.., n - 1.., ..]);
            let logits = self.model.head(hidden).into_data().try_into_vec_as::<f32>();
            let logits = logits.map_err(|e| GptError::Tensor(format!("reading logits: {e:?}")))?;
            out[i * vocab..(i + 1) * vocab].copy_from_slice(&logits);
        }
        Ok(out)
    }

    /// Samples, records and streams one token per unfinished row.
    fn take_step(&mut self, logits: &[f32]) -> Result<Vec<StepToken>> {
        let vocab = self.model.vocab_size();
        let mut produced = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate().filter(|(_, r)| r.finish.is_none()) {
            let (token, text) = row.take_token(&logits[i * vocab..(i + 1) * vocab], &self.config)?;
            produced.push(StepToken { row: i, token, text });
        }
        self.steps += 1;
        Ok(produced)
    }

    /// Feeds the tokens just produced back through the model (one position per row).
    fn advance(&mut self, produced: &[StepToken]) -> Result<Vec<f32>> {
        if !self.config.use_cache {
            return self.recompute();
        }
        // Rows that are done still take a slot in the batch: feed them padding.
        let mut tokens = vec![self.config.tokenizer.pad_id(); self.rows.len()];
        let mut is_pad = vec![true; self.rows.len()];
        for step in produced.iter().filter(|s| self.rows[s.row].finish.is_none()) {
            tokens[step.row] = step.token;
            is_pad[step.row] = false;
        }
        let cache = self.cache.as_mut().ok_or_else(|| GptError::Generation("the KV cache is missing".into()))?;
        cached_logits(self.model, &tokens, &is_pad, cache, &vec![0; self.rows.len()])
    }

    pub fn is_done(&self) -> bool {
        self.logits.is_none()
    }

    /// Runs to the end and returns one completion per prompt.
    pub fn finish(mut self) -> Result<Vec<Completion>> {
        for step in self.by_ref() {
            step?;
        }
        Ok(self.rows.into_iter().map(Row::into_completion).collect())
    }
}

/// Logits `[B * vocab]` of position `positions[b]` of each row of `hidden` `[B, T, C]`.
pub(crate) fn logits_at(model: &dyn CausalLm, hidden: Tensor<3>, positions: &[usize]) -> Result<Vec<f32>> {
    let [b, t, c] = hidden.dims();
    let index: Vec<i64> = positions.iter().enumerate().map(|(row, &p)| (row * t + p) as i64).collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b]), &hidden.device());
    let last = hidden.reshape([b * t, c]).select(0, index).reshape([b, 1, c]);
    model.head(last).into_data().try_into_vec_as::<f32>().map_err(|e| GptError::Tensor(format!("reading logits: {e:?}")))
}

/// Length of the prefix of `text` that no stop string can still claim: the text minus its
/// longest suffix that is a proper prefix of a stop string.
fn stop_safe_len(text: &str, stop: &[String]) -> usize {
    let mut safe = text.len();
    for s in stop {
        for (cut, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..cut]) {
                safe = safe.min(text.len() - cut);
            }
        }
    }
    safe
}

impl Iterator for TokenStream<'_> {
    type Item = Result<Vec<StepToken>>;

    fn next(&mut self) -> Option<Self::Item> {
        let logits = self.logits.take()?;
        let result = self.take_step(&logits).and_then(|produced| {
            let running = self.rows.iter().any(|r| r.finish.is_none());
            if running && self.steps < self.config.max_new_tokens {
                self.logits = Some(self.advance(&produced)?);
            }
            Ok(produced)
        });
        Some(result)
    }
}

/// Generates a completion for every prompt (token ids) in one batch.
pub fn generate(model: &dyn CausalLm, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Completion>> {
    TokenStream::new(model, prompts, config)?.finish()
}
