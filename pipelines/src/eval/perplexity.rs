//! Token-level perplexity of a text, by the strided sliding window Hugging Face documents for
//! fixed-length models (<https://huggingface.co/docs/transformers/perplexity>).
//!
//! A text longer than the model's context is read in windows of `seq_len` tokens that start every
//! `stride` tokens. Each window's targets are the tokens no earlier window had as targets, so every
//! token is scored once, with at least `seq_len - stride` tokens of context when the text has them;
//! a window's first token has nothing before it in the window and is never scored (with
//! `stride == seq_len` that leaves one token per window unscored, as HF's loop does). The
//! perplexity is `exp(summed nll / scored tokens)`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use pipelines::eval::perplexity::{Settings, evaluate};
//! let device = gpt::DeviceSpec::Auto.resolve()?;
//! let model = gpt::hf::load_language_model("gpt2", &device, 0)?;
//! let tokenizer = gpt::hf::load_tokenizer("gpt2")?;
//! let text = "It was the best of times, it was the worst of times.";
//! let result = evaluate(&model, &tokenizer.try_encode(text)?, Settings::new(1024, 512, 1), |_windows| {})?;
//! println!("perplexity {:.2}, {:.3} bits per byte", result.perplexity(), result.bits_per_byte(text.len()));
//! # Ok(()) }
//! ```

use std::ops::Range;

use anyhow::{Context, Result, ensure};
use gpt::burn::module::Module;
use gpt::burn::prelude::*;
use gpt::models::CausalLm;

use crate::train::cross_entropy_per_token;

/// Windows per forward pass on a GPU (the CPU backend is fastest one window at a time, as
/// HellaSwag's scoring found).
pub const GPU_BATCH_SIZE: usize = 4;
/// Scored positions per run of the output head: a window's logits at a large vocabulary
/// (Llama 3: 128k × 8k positions × 4 bytes = 4 GiB) would not fit otherwise.
const HEAD_CHUNK: usize = 2048;

/// A good number of windows per forward pass on `device`.
pub fn default_batch_size(device: &Device) -> usize {
    if gpt::backend::is_flex(device) { 1 } else { GPU_BATCH_SIZE }
}

/// How the text is read: windows of `seq_len` tokens every `stride` tokens, `batch_size` windows
/// per forward pass (the result does not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub seq_len: usize,
    pub stride: usize,
    pub batch_size: usize,
}

impl Settings {
    pub fn new(seq_len: usize, stride: usize, batch_size: usize) -> Self {
        Self { seq_len, stride, batch_size }
    }
}

/// One window: tokens `begin..end` run through the model; the tokens at `scored` (a sub-range,
/// absolute positions) are its targets, each predicted by the position before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub scored: Range<usize>,
}

/// The windows over `len` tokens, as HF's loop makes them: `begin` = 0, stride, 2·stride …, `end` =
/// min(begin + seq_len, len), targets from the previous window's end, stopping at the window
/// that reaches the end of the text. A stride longer than `seq_len` would skip tokens: refused.
pub fn windows(len: usize, seq_len: usize, stride: usize) -> Result<Vec<Window>> {
    ensure!(seq_len >= 2, "the window length must be at least 2 tokens (got {seq_len})");
    ensure!((1..=seq_len).contains(&stride), "the stride must be between 1 and the window length {seq_len} (got {stride})");
    let mut windows = Vec::new();
    let mut prev_end = 0;
    for begin in (0..len).step_by(stride) {
        let end = (begin + seq_len).min(len);
        // A window's first token has no position before it in the window to predict it.
        windows.push(Window { begin, end, scored: prev_end.max(begin + 1)..end });
        prev_end = end;
        if end == len {
            break;
        }
    }
    Ok(windows)
}

/// The summed negative log-likelihood of the scored tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// Tokens scored.
    pub tokens: usize,
    /// Summed negative log-likelihood of the scored tokens, in nats.
    pub nll: f64,
    /// Windows run through the model.
    pub windows: usize,
}

impl Perplexity {
    /// Mean nll per scored token (nats).
    pub fn mean_nll(&self) -> f64 {
        self.nll / self.tokens as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }

    /// The summed nll in bits per UTF-8 byte of the text: comparable across tokenizers.
    pub fn bits_per_byte(&self, bytes: usize) -> f64 {
        self.nll / std::f64::consts::LN_2 / bytes as f64
    }
}

/// The perplexity of token ids `ids` under `model` (in inference mode; a model on an autodiff
/// device is evaluated through its `valid()` copy). `progress` is called with the number of
/// windows done after each forward pass.
pub fn evaluate<M: CausalLm + Module>(model: &M, ids: &[u32], settings: Settings, mut progress: impl FnMut(usize)) -> Result<Perplexity> {
    ensure!(settings.batch_size > 0, "the batch size must be at least 1");
    let context = model.context_length();
    ensure!(settings.seq_len <= context, "the window length {} is more than the model's context of {context} tokens", settings.seq_len);
    let vocab = model.vocab_size();
    if let Some((at, &id)) = ids.iter().enumerate().find(|(_, id)| **id as usize >= vocab) {
        anyhow::bail!("token {at} is id {id}, outside the model's vocabulary of {vocab}");
    }
    let windows = windows(ids.len(), settings.seq_len, settings.stride)?;
    let tokens: usize = windows.iter().map(|w| w.scored.len()).sum();
    ensure!(tokens > 0, "the text has {} token(s): nothing to score (a token is scored given the ones before it)", ids.len());

    let model = model.valid();
    let mut nll = 0.0;
    for (done, batch) in windows.chunks(settings.batch_size).enumerate() {
        nll += batch_nll(&model, ids, batch)?;
        progress((done * settings.batch_size + batch.len()).min(windows.len()));
    }
    Ok(Perplexity { tokens, nll, windows: windows.len() })
}

/// The summed nll of the scored tokens of a batch of windows, in one forward pass. Windows are
/// right-padded to the longest (only the text's last window is shorter): attention is causal, so
/// padding after a window's tokens changes none of their states, and no padded position is scored.
pub fn batch_nll(model: &dyn CausalLm, ids: &[u32], batch: &[Window]) -> Result<f64> {
    let Some(width) = batch.iter().map(|w| w.end - w.begin).max() else {
        return Ok(0.0);
    };
    let device = model.device();
    let mut rows = vec![0i64; batch.len() * width];
    let (mut predictors, mut targets) = (Vec::new(), Vec::new());
    for (r, window) in batch.iter().enumerate() {
        for (slot, &id) in rows[r * width..].iter_mut().zip(&ids[window.begin..window.end]) {
            *slot = i64::from(id);
        }
        for t in window.scored.clone() {
            predictors.push((r * width + t - 1 - window.begin) as i64);
            targets.push(i64::from(ids[t]));
        }
    }
    let hidden = model.hidden(Tensor::<2, Int>::from_data(TensorData::new(rows, [batch.len(), width]), &device));
    let c = hidden.dims()[2];
    let states = hidden.reshape([batch.len() * width, c]);

    // The output head and the cross-entropy on the scored positions only, a chunk at a time.
    let mut nll = 0.0;
    for (positions, targets) in predictors.chunks(HEAD_CHUNK).zip(targets.chunks(HEAD_CHUNK)) {
        let n = positions.len();
        let picked = states.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(positions.to_vec(), [n]), &device));
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [1, n]), &device);
        let losses: Vec<f32> = cross_entropy_per_token(model.head(picked.reshape([1, n, c])), targets)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the token losses: {e:?}"))
            .context("scoring a batch of windows")?;
        nll += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
    }
    Ok(nll)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(len: usize, seq_len: usize, stride: usize) -> Vec<(usize, usize, Range<usize>)> {
        windows(len, seq_len, stride).unwrap().into_iter().map(|w| (w.begin, w.end, w.scored)).collect()
    }

    #[test]
    fn overlapping_windows_score_every_token_but_the_first_once() {
        // 11 tokens, windows of 4 every 2: HF's targets are 0..4, 4..6, 6..8, 8..10, 10..11;
        // token 0 has nothing before it, the others have at least 2 tokens of context.
        assert_eq!(layout(11, 4, 2), vec![(0, 4, 1..4), (2, 6, 4..6), (4, 8, 6..8), (6, 10, 8..10), (8, 11, 10..11)]);
    }

    #[test]
    fn disjoint_windows_leave_each_windows_first_token_unscored() {
        // stride = seq_len: chunks 0..4, 4..8, 8..10; tokens 0, 4 and 8 are targets nothing predicts.
        assert_eq!(layout(10, 4, 4), vec![(0, 4, 1..4), (4, 8, 5..8), (8, 10, 9..10)]);
    }

    #[test]
    fn a_text_shorter_than_a_window_is_one_window() {
        assert_eq!(layout(3, 8, 4), vec![(0, 3, 1..3)]);
        assert_eq!(layout(8, 8, 4), vec![(0, 8, 1..8)]);
        assert_eq!(layout(1, 8, 8), vec![(0, 1, 1..1)]);
    }

    /// tests/fixtures/perplexity_reference.json: transformers' strided computation on the tiny
    /// GPT-2 and Llama fixtures (scripts/reference/perplexity_reference.py).
    fn reference() -> (std::path::PathBuf, serde_json::Value) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let text = std::fs::read_to_string(fixtures.join("perplexity_reference.json")).unwrap();
        (fixtures, serde_json::from_str(&text).unwrap())
    }

    fn assert_close(what: &str, got: f64, want: f64) {
        let rel = ((got - want) / want).abs();
        eprintln!("{what}: relative difference {rel:.1e}");
        assert!(rel <= 1e-4, "{what}: {got} vs transformers' {want} (relative difference {rel:.2e})");
    }

    #[test]
    fn matches_transformers_strided_perplexity_on_the_tiny_models() {
        let (fixtures, reference) = reference();
        let text = std::fs::read_to_string(fixtures.join(reference["text"].as_str().unwrap())).unwrap();
        assert_eq!(text.len() as u64, reference["bytes"].as_u64().unwrap());
        let device = Device::flex();
        let cases = reference["cases"].as_array().unwrap();
        for name in ["gpt2-tiny", "llama-tiny"] {
            let model_ref = crate::runs::ModelRef::resolve(fixtures.join(name).to_str().unwrap());
            let model = model_ref.load_language_model(&device, 0).unwrap();
            let ids = model_ref.tokenizer().unwrap().try_encode(&text).unwrap();
            let mut seen = (false, false);
            for case in cases.iter().filter(|c| c["model"] == name) {
                let (seq_len, stride) = (case["seq_len"].as_u64().unwrap() as usize, case["stride"].as_u64().unwrap() as usize);
                let at = format!("{name}, seq_len {seq_len}, stride {stride}");
                assert_eq!(ids.len() as u64, case["text_tokens"].as_u64().unwrap(), "{at}: the tokenization");
                // Batches of 1 and 3 windows (3 pads the short last window among full ones).
                for batch_size in [1, 3] {
                    let result = evaluate(&model, &ids, Settings::new(seq_len, stride, batch_size), |_| {}).unwrap();
                    assert_eq!(result.tokens as u64, case["tokens"].as_u64().unwrap(), "{at}: scored tokens");
                    assert_eq!(result.windows as u64, case["windows"].as_u64().unwrap(), "{at}: windows");
                    assert_close(&format!("{at}: nll"), result.nll, case["nll"].as_f64().unwrap());
                    assert_close(&format!("{at}: perplexity"), result.perplexity(), case["perplexity"].as_f64().unwrap());
                    assert_close(&format!("{at}: bits per byte"), result.bits_per_byte(text.len()), case["bits_per_byte"].as_f64().unwrap());
                }
                if stride < seq_len { seen.0 = true } else { seen.1 = true }
            }
            assert_eq!(seen, (true, true), "{name}: the reference has cases with stride < seq_len and stride = seq_len");
        }
    }

    #[test]
    fn strides_that_skip_tokens_are_refused() {
        assert!(windows(10, 4, 5).is_err());
        assert!(windows(10, 4, 0).is_err());
        assert!(windows(10, 1, 1).is_err());
    }
}
