//! GPT models on Burn: the models, their Hugging Face weights, the tokenizer and generation.
//!
//! ```no_run
//! use gpt::{DeviceSpec, Tokenizer, generate::{GenerateConfig, generate}, hf::load_model};
//! # fn main() -> gpt::Result<()> {
//! let device = DeviceSpec::Auto.resolve()?;
//! let model = load_model("gpt2", &device, 0)?;          // HF cache, downloads when missing
//! let tokenizer = Tokenizer::gpt2();
//! let out = generate(&model, &[tokenizer.encode("Hello, I'm a language model,")], &GenerateConfig::greedy(30))?;
//! println!("{}", out[0].text);
//! # Ok(()) }
//! ```
//!
//! Train/eval mode is Burn's: a model built on an autodiff device (`device.autodiff()`) trains
//! (dropout on); `model.valid()` is the inference copy (dropout off), `model.train()` goes back.
//!
//! The layers, each using only those above it in this list:
//! - [`error`]: the crate's error type.
//! - [`io`]: files, tensors by Hugging Face name, safetensors, the hub.
//! - [`quant`]: quantized frozen weights (QLoRA's NF4, in bitsandbytes' format).
//! - [`backend`]: devices, the allocator, the CPU kernels.
//! - [`ops`]: the operations models call on every backend (linear, GELU, dropout, tied head).
//! - [`models`]: model families ([`models::gpt2`]) and the KV cache they share.
//! - [`lora`]: LoRA adapters and their PEFT files.
//! - [`text`]: tokenizers and their files.
//! - [`generate`]: sampling, batched and continuous-batching generation.
//! - [`hf`]: what a directory or `--model` string is, and loading and saving it.

pub mod backend;
pub mod error;
pub mod generate;
pub mod hf;
pub mod io;
pub mod lora;
pub mod models;
pub mod ops;
pub mod quant;
pub mod text;

pub use backend::DeviceSpec;
pub use error::{GptError, Result};
pub use lora::{LoraConfig, LoraTargets};
pub use models::gpt2::{EOT_TOKEN, GPT2_VOCAB_SIZE, Gpt, GptConfig};
pub use models::{Classifier, Trainable};
pub use text::Tokenizer;

/// Burn, re-exported so that downstream crates use the exact same version.
pub use burn;
