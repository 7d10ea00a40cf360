//! The model crate's integration tests, one binary (one link of Burn instead of one per file).
//! `LLMFS_TEST_DEVICE` picks the backend under test (see `common::device`).

mod common;

mod attention_mask;
mod classifier;
mod bnb_checkpoint;
mod fast_bpe;
mod fuzz_loaders;
mod generation;
mod llama;
mod lora;
mod quantize;
mod parity;
mod tokenizer;
mod weight_dtype;
mod weights;
