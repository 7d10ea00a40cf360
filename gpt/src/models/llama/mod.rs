//! The Llama family — Llama 2/3.x, SmolLM2, Mistral (without sliding window), Qwen2/2.5, Qwen3 —
//! as one model with switches: q/k/v biases, per-head q/k norm, explicit head_dim, tied or
//! untied head, rope scaling. Chosen from `config.json`'s `architectures` / `model_type`.

pub mod attention;
pub mod block;
pub mod config;
pub mod init;
pub mod mlp;
pub mod model;
pub mod rope;

pub use config::{Architecture, LlamaConfig};
pub use model::Llama;
