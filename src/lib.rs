//! llmfs: GPT models from scratch in Rust, on Burn. This crate re-exports the workspace crates:
//! [`gpt`] (model, weights, tokenizer, generation) and [`pipelines`] (data, training, evaluation).

pub use gpt;
pub use pipelines;
