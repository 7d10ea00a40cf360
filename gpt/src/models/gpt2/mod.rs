//! GPT-2 (124M–1558M): token + position embeddings → blocks (LayerNorm → attention → residual,
//! LayerNorm → MLP → residual) → final LayerNorm → output head tied to the token embedding.
//!
//! Field names follow Hugging Face's (`wte`, `h.0.attn.c_attn`, `ln_f`, ...), so a parameter's
//! Burn path is its HF tensor name (see [`crate::io::hf_name`]).

pub mod attention;
pub mod block;
pub mod config;
pub mod init;
pub mod mlp;
pub mod model;

pub use config::{EOT_TOKEN, GPT2_VOCAB_SIZE, GptConfig, PRESETS};
pub use init::RandomInit;
pub use model::Gpt;
