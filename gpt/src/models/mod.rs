//! Model families. Each has its config, its modules in Hugging Face's parameter names, its
//! initialisation and its heads; they share the KV cache, [`crate::ops`] and [`crate::io`].

pub mod gpt2;
pub mod kv_cache;
