//! The GPT-2 byte-level BPE (tiktoken's `r50k_base`, identical to its `gpt2` encoding). The vocabulary
//! is compiled into the binary, so it works offline.
//!
//! Encoding splits the text with [`super::pretokenize`] and merges each piece with tiktoken's BPE
//! (`byte_pair_split`, or tiktoken-rs's encoder for pieces of 100 bytes and more); tiktoken-rs's own `encode_ordinary` gives the same tokens (tested) but runs
//! its pattern through fancy_regex, several times slower and contended between threads. Decoding is
//! tiktoken-rs's.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;
use tiktoken_rs::CoreBPE;

use crate::models::gpt2::{EOT_TOKEN, GPT2_VOCAB_SIZE};
use crate::error::{GptError, Result};

/// From this length on tiktoken's BPE merges a piece with a heap rather than a quadratic scan.
const LONG_PIECE: usize = 100;

/// The one special token's text; [`Tokenizer::encode`] turns it into [`EOT_TOKEN`].
const EOT_TEXT: &str = "<|endoftext|>";

#[derive(Clone, Copy)]
pub struct Tokenizer {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer(gpt2 / r50k_base)")
    }
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self::gpt2()
    }
}

impl Tokenizer {
    pub fn gpt2() -> Self {
        Self { bpe: tiktoken_rs::r50k_base_singleton() }
    }

    pub const fn eot(&self) -> u32 {
        EOT_TOKEN
    }

    pub const fn vocab_size(&self) -> usize {
        GPT2_VOCAB_SIZE
    }

    /// Encodes text; the literal `<|endoftext|>` becomes token 50256 (as `allowed_special={"<|endoftext|>"}`
    /// in tiktoken, which *Build a LLM From Scratch* uses).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        for (i, part) in text.split(EOT_TEXT).enumerate() {
            if i > 0 {
                ids.push(EOT_TOKEN);
            }
            self.encode_ordinary_into(part, &mut ids);
        }
        ids
    }

    /// Encodes text with every special-token string treated as plain text (tiktoken's
    /// `encode_ordinary`, what build-nanogpt's data preparation uses).
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_ordinary_into(text, &mut ids);
        ids
    }

    /// [`Self::encode_ordinary`], appending to `ids`.
    pub fn encode_ordinary_into(&self, text: &str, ids: &mut Vec<u32>) {
        let ranks = self.ranks();
        for piece in super::pretokenize::pieces(text) {
            let bytes = piece.as_bytes();
            if let Some(&id) = ranks.get(bytes) {
                ids.push(id); // most pieces are whole tokens
            } else if bytes.len() < LONG_PIECE {
                // Single bytes are all tokens, so a piece here has at least two.
                ids.extend(tiktoken_rs::byte_pair_split(bytes, ranks).into_iter().map(|part| ranks[part]));
            } else {
                // tiktoken merges long pieces with a heap (its split is quadratic); a piece alone
                // is matched by the pattern as one piece, so this is the same encoding.
                ids.extend(self.bpe.encode_ordinary(piece));
            }
        }
    }

    /// The ordinary tokens' byte strings and ids (tiktoken's `encoder`, private in tiktoken-rs: read
    /// back through its decoder once).
    fn ranks(&self) -> &'static FxHashMap<Vec<u8>, u32> {
        static RANKS: OnceLock<FxHashMap<Vec<u8>, u32>> = OnceLock::new();
        RANKS.get_or_init(|| {
            (0..EOT_TOKEN)
                .map(|id| {
                    // Every id below <|endoftext|> is an ordinary token of r50k_base.
                    let bytes = self.bpe.decode_bytes(&[id]).unwrap_or_else(|_| panic!("r50k_base has no token {id}"));
                    (bytes, id)
                })
                .collect()
        })
    }

    /// The raw bytes of `ids` (a token may hold part of a UTF-8 character).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.bpe.decode_bytes(ids).map_err(|e| GptError::Tokenizer(format!("token id {} is not in the GPT-2 vocabulary", e.token)))
    }

    /// Decodes to text; bytes that are not valid UTF-8 become U+FFFD (like tiktoken's `errors="replace"`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

/// Turns a stream of tokens into a stream of text without splitting UTF-8 characters: bytes of an
/// incomplete character wait for the next token.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
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

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
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
        out.push_str(&stream.finish());
        assert_eq!(out, text);
        assert!(tok.decode(&[50257]).unwrap_err().to_string().contains("50257"));
    }
}
