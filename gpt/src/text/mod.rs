//! Text in and out: one [`Tokenizer`] over GPT-2's BPE (and its fast pre-tokenizer) and a model's
//! own `tokenizer.json` (with a fast path for Llama 3's kind); chat templates; GPT-2's tokenizer in
//! Hugging Face's file format.

pub mod byte_level_bpe;
pub mod chat_template;
pub mod files;
pub mod gpt2_bpe;
pub mod hf_tokenizer;
pub mod pretokenize;
pub mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use tokenizer::{StreamDecoder, Tokenizer};
