//! One tokenizer type over both kinds: GPT-2's BPE (tiktoken-rs, compiled in, the fast path) and a
//! model's own `tokenizer.json` (Hugging Face's `tokenizers`), with the special tokens, end-of-
//! sequence ids and chat template that come from the model's files rather than from constants.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::chat_template::{ChatMessage, ChatTemplate};
use super::files::EOT_TEXT;
use super::gpt2_bpe::Gpt2Bpe;
use super::hf_tokenizer::{HfTokenizer, TOKENIZER_FILE};
use crate::error::{GptError, Result};
use crate::models::gpt2::{EOT_TOKEN, GPT2_VOCAB_SIZE};

#[derive(Clone)]
pub struct Tokenizer {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Gpt2(Gpt2Bpe),
    Hf(Arc<HfTokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Gpt2(_) => f.write_str("Tokenizer(gpt2 / r50k_base)"),
            Kind::Hf(hf) => write!(f, "Tokenizer({})", hf.origin),
        }
    }
}

/// Two tokenizers are equal when they are the same tokenizer (GPT-2's, or one loaded once).
impl PartialEq for Tokenizer {
    fn eq(&self, other: &Self) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Gpt2(_), Kind::Gpt2(_)) => true,
            (Kind::Hf(a), Kind::Hf(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}

impl Tokenizer {
    pub fn gpt2() -> Self {
        Self { kind: Kind::Gpt2(Gpt2Bpe::new()) }
    }

    /// The tokenizer of model directory `dir`: its `tokenizer.json` (+ configs) when there is one;
    /// GPT-2's BPE for a directory without one (what llmfs saves for GPT-2 models).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        if dir.join(TOKENIZER_FILE).is_file() {
            Ok(Self { kind: Kind::Hf(Arc::new(HfTokenizer::from_dir(dir)?)) })
        } else {
            Ok(Self::gpt2())
        }
    }

    /// Whether this is GPT-2's BPE.
    pub fn is_gpt2(&self) -> bool {
        matches!(self.kind, Kind::Gpt2(_))
    }

    /// The end-of-sequence ids generation stops at (GPT-2: `<|endoftext|>`; others: from
    /// `generation_config.json`, `config.json` or the tokenizer's `eos_token`).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.kind {
            Kind::Gpt2(_) => vec![EOT_TOKEN],
            Kind::Hf(hf) => hf.eos_ids.clone(),
        }
    }

    /// The first end-of-sequence id (GPT-2: 50256), also the padding filler when there is no pad token.
    pub fn eot(&self) -> u32 {
        match &self.kind {
            Kind::Gpt2(_) => EOT_TOKEN,
            Kind::Hf(hf) => hf.eos_ids.first().copied().or(hf.pad_id).unwrap_or(0),
        }
    }

    /// The token to pad batches with: the tokenizer's pad token, or else its end of sequence.
    pub fn pad_id(&self) -> u32 {
        match &self.kind {
            Kind::Gpt2(_) => EOT_TOKEN,
            Kind::Hf(hf) => hf.pad_id.unwrap_or_else(|| self.eot()),
        }
    }

    /// The token a model starts from when given nothing: beginning of sequence, or end of text.
    pub fn start_id(&self) -> u32 {
        match &self.kind {
            Kind::Gpt2(_) => EOT_TOKEN,
            Kind::Hf(hf) => hf.bos_id.unwrap_or_else(|| self.eot()),
        }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Gpt2(_) => GPT2_VOCAB_SIZE,
            Kind::Hf(hf) => hf.inner.get_vocab_size(true),
        }
    }

    /// Encodes text with the tokenizer's defaults: GPT-2 adds nothing (the literal
    /// `<|endoftext|>` becomes 50256, as tiktoken's `allowed_special` in *Build a LLM From
    /// Scratch*); a `tokenizer.json` adds what its post-processor adds (Llama 3: `<|begin_of_text|>`;
    /// Qwen: nothing).
    ///
    /// GPT-2's BPE cannot fail; a `tokenizer.json` can (its regex giving up on a pathological
    /// input): this panics then, [`Self::try_encode`] returns the error.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.try_encode(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::encode`], with a tokenizer's failure as an error.
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.kind {
            Kind::Gpt2(bpe) => Ok(bpe.encode(text)),
            Kind::Hf(hf) => hf_encode(hf, text, true),
        }
    }

    /// Encodes text without adding special tokens. GPT-2 also reads `<|endoftext|>` as plain text
    /// (tiktoken's `encode_ordinary`, what build-nanogpt's data preparation uses); a
    /// `tokenizer.json`'s added tokens are still recognised, as `tokenizers` does.
    /// Panics where [`Self::encode`] does; [`Self::try_encode_ordinary`] returns the error.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        self.try_encode_ordinary(text).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        self.try_encode_ordinary_into(text, &mut ids)?;
        Ok(ids)
    }

    /// [`Self::encode_ordinary`], appending to `ids`.
    pub fn encode_ordinary_into(&self, text: &str, ids: &mut Vec<u32>) {
        self.try_encode_ordinary_into(text, ids).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_encode_ordinary_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        match &self.kind {
            Kind::Gpt2(bpe) => bpe.encode_ordinary_into(text, ids),
            Kind::Hf(hf) => {
                if !hf.fast().is_some_and(|fast| fast.encode_ordinary_into(text, ids)) {
                    ids.extend(hf_encode(hf, text, false)?);
                }
            }
        }
        Ok(())
    }

    /// The model's chat template, when its files have one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        match &self.kind {
            Kind::Gpt2(_) => None,
            Kind::Hf(hf) => hf.chat_template.as_ref(),
        }
    }

    /// The texts of the beginning- and end-of-sequence tokens (`bos_token`, `eos_token` in chat
    /// templates; empty when there is none).
    pub fn special_token_texts(&self) -> (String, String) {
        match &self.kind {
            Kind::Gpt2(_) => (EOT_TEXT.to_string(), EOT_TEXT.to_string()),
            Kind::Hf(hf) => (hf.bos_text.clone().unwrap_or_default(), hf.eos_text.clone().unwrap_or_default()),
        }
    }

    /// Renders `messages` with `template` (or the model's own) and encodes the result without
    /// adding special tokens (the template writes them), as transformers' `apply_chat_template`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        template: Option<&ChatTemplate>,
    ) -> Result<(String, Vec<u32>)> {
        let template = template.or(self.chat_template()).ok_or_else(|| {
            GptError::Tokenizer(format!("{self:?} has no chat template (tokenizer_config.json → chat_template); pass one with --chat-template"))
        })?;
        let text = template.render(messages, add_generation_prompt)?;
        let (ids, _) = self.encode_rendered(&text)?;
        Ok((text, ids))
    }

    /// Encodes text a chat template rendered, with the byte range in `text` of every token (so
    /// that a token can be traced to the message it came from). The template writes its own
    /// special tokens, so nothing is added, and they are read as tokens: a `tokenizer.json`'s
    /// added tokens as `tokenizers` reads them, GPT-2's `<|endoftext|>` as [`Self::encode`] does.
    pub fn encode_rendered(&self, text: &str) -> Result<(Vec<u32>, Vec<Range<usize>>)> {
        match &self.kind {
            Kind::Gpt2(bpe) => {
                let ids = bpe.encode(text);
                // GPT-2's tokens are byte strings that concatenate to the text.
                let mut offsets = Vec::with_capacity(ids.len());
                let mut end = 0;
                for &id in &ids {
                    let start = end;
                    end += bpe.decode_bytes(&[id])?.len();
                    offsets.push(start..end);
                }
                Ok((ids, offsets))
            }
            Kind::Hf(hf) => {
                // `encode` (not `encode_fast`, which skips them) for byte offsets.
                let encoding = hf.inner.encode(text, false).map_err(|e| GptError::Tokenizer(format!("{}: encoding failed: {e}", hf.origin)))?;
                Ok((encoding.get_ids().to_vec(), encoding.get_offsets().iter().map(|&(start, end)| start..end).collect()))
            }
        }
    }

    /// The raw bytes of `ids` (GPT-2's tokens may hold part of a UTF-8 character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match &self.kind {
            Kind::Gpt2(bpe) => bpe.decode_bytes(ids),
            Kind::Hf(_) => self.decode(ids).map(String::into_bytes),
        }
    }

    /// Decodes to text, special tokens included; bytes that are not valid UTF-8 become U+FFFD
    /// (like tiktoken's `errors="replace"`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.kind {
            Kind::Gpt2(bpe) => Ok(String::from_utf8_lossy(&bpe.decode_bytes(ids)?).into_owned()),
            Kind::Hf(hf) => {
                check_ids(hf, ids)?;
                hf.inner.decode(ids, false).map_err(|e| GptError::Tokenizer(format!("decoding {ids:?}: {e}")))
            }
        }
    }
}

fn hf_encode(hf: &HfTokenizer, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
    let encoding = hf.inner.encode_fast(text, add_special_tokens);
    let encoding = encoding.map_err(|e| GptError::Tokenizer(format!("{}: encoding failed: {e}", hf.origin)))?;
    Ok(encoding.get_ids().to_vec())
}

fn check_ids(hf: &HfTokenizer, ids: &[u32]) -> Result<()> {
    match ids.iter().find(|&&id| hf.inner.id_to_token(id).is_none()) {
        Some(bad) => Err(GptError::Tokenizer(format!("token id {bad} is not in the vocabulary of {}", hf.origin))),
        None => Ok(()),
    }
}

/// Turns a stream of tokens into a stream of text without splitting UTF-8 characters: bytes of an
/// incomplete character wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    /// GPT-2: bytes of a character not complete yet.
    pending: Vec<u8>,
    /// A `tokenizer.json`: the state of `tokenizers`' `step_decode_stream` (the ids since the
    /// last complete text, its decoded prefix, and where the new ids start).
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        if let Kind::Hf(hf) = &tokenizer.kind {
            check_ids(hf, &[id])?;
            let step = tokenizers::step_decode_stream(&hf.inner, vec![id], false, &mut self.ids, &mut self.prefix, &mut self.prefix_index);
            return step.map(Option::unwrap_or_default).map_err(|e| GptError::Tokenizer(format!("decoding token {id}: {e}")));
        }
        self.pending.extend(tokenizer.decode_bytes(&[id])?);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An invalid sequence that is not merely cut short will never become valid: emit it
            // (as U+FFFD) rather than holding it forever.
            Err(e) => match e.error_len() {
                None => e.valid_up_to(),
                Some(_) => self.pending.len(),
            },
        };
        let text = String::from_utf8_lossy(&self.pending[..complete]).into_owned();
        self.pending.drain(..complete);
        Ok(text)
    }

    /// Whatever is left at the end of the stream (`tokenizer`: the one tokens were pushed with).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> String {
        let text = match &tokenizer.kind {
            Kind::Hf(hf) if !self.ids.is_empty() => {
                let all = hf.inner.decode(&self.ids, false).unwrap_or_default();
                all.get(self.prefix.len()..).unwrap_or_default().to_string()
            }
            _ => String::from_utf8_lossy(&self.pending).into_owned(),
        };
        *self = Self::default();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_tiktoken_gpt2() {
        // Token ids from the fixture's expected.json (tiktoken 0.14, `gpt2`).
        let tok = Tokenizer::gpt2();
        assert_eq!(
            tok.encode("Every effort moves you forward, but it takes patience to get there."),
            [6109, 3626, 6100, 345, 2651, 11, 475, 340, 2753, 16336, 284, 651, 612, 13]
        );
        assert_eq!(
            tok.encode("The library opens at nine every morning, except on public holidays."),
            [464, 5888, 9808, 379, 5193, 790, 3329, 11, 2845, 319, 1171, 17122, 13]
        );
        assert_eq!(tok.encode("Hello<|endoftext|>"), [15496, 50256]);
        assert_ne!(tok.encode_ordinary("<|endoftext|>"), [50256]);
    }

    #[test]
    fn rendered_text_reads_special_tokens_and_gives_byte_offsets() {
        let tok = Tokenizer::gpt2();
        let text = "Hi café<|endoftext|>### User:";
        let (ids, offsets) = tok.encode_rendered(text).unwrap();
        assert_eq!(ids, tok.encode(text));
        assert!(ids.contains(&50256));
        assert_eq!(offsets.last().unwrap().end, text.len());
        let pieces: Vec<&str> = offsets.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(pieces, ["Hi", " café", "<|endoftext|>", "###", " User", ":"]);
        // A character split over several tokens: the ranges still tile the text's bytes.
        let (_, offsets) = tok.encode_rendered("温度").unwrap();
        assert!(offsets.len() > 2 && offsets.windows(2).all(|w| w[0].end == w[1].start) && offsets.last().unwrap().end == 6, "{offsets:?}");
    }

    #[test]
    fn round_trips_unicode_and_streams_partial_characters() {
        let tok = Tokenizer::gpt2();
        let text = "naïve café — 温度 is 25 °C 🙂";
        let ids = tok.encode(text);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        let mut stream = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(&tok, id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "streaming split a character: {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&stream.finish(&tok));
        assert_eq!(out, text);
        assert!(tok.decode(&[50257]).unwrap_err().to_string().contains("50257"));
    }
}
