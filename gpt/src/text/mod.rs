//! Text in and out: the GPT-2 BPE tokenizer, its fast pre-tokenizer, and its Hugging Face files.

pub mod files;
pub mod pretokenize;
pub mod tokenizer;

pub use tokenizer::{StreamDecoder, Tokenizer};
