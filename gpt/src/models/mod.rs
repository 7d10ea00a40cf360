//! Model families. Each has its config, its modules in Hugging Face's parameter names, its
//! initialisation and its heads; they share the KV cache, [`crate::ops`] and [`crate::io`].
//! [`LanguageModel`] is any of them, for code that does not care which.

pub mod classifier;
pub mod gpt2;
pub mod kv_cache;
pub mod language_model;
pub mod llama;

pub use classifier::{Classifier, Trainable};
pub use language_model::{CausalLm, LanguageModel};
