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

use crate::models::gpt2::EOT_TOKEN;
use crate::error::{GptError, Result};

/// From this length on tiktoken's BPE merges a piece with a heap rather than a quadratic scan.
const LONG_PIECE: usize = 100;

/// The one special token's text; [`Gpt2Bpe::encode`] turns it into [`EOT_TOKEN`].
const EOT_TEXT: &str = "<|endoftext|>";

/// tiktoken's `r50k_base` (compiled into tiktoken-rs) and our fast encoder over it.
#[derive(Clone, Copy)]
pub struct Gpt2Bpe {
    bpe: &'static CoreBPE,
}

impl Default for Gpt2Bpe {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpt2Bpe {
    pub fn new() -> Self {
        Self { bpe: tiktoken_rs::r50k_base_singleton() }
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
    /// `encode_ordinary`), appending to `ids`.
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
}

