//! GPT-2 on Burn: the model, its Hugging Face weights, the tokenizer and generation.
//!
//! ```no_run
//! use gpt::{DeviceSpec, Tokenizer, generate::{GenerateConfig, generate}, weights::load_model};
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

pub mod allocator;
pub mod attention;
pub mod block;
pub mod classifier;
pub mod config;
pub mod continuous;
pub mod device;
pub mod dropout;
pub mod error;
#[cfg(feature = "flex")]
pub mod flex_kernels;
#[cfg(not(feature = "flex"))]
pub mod flex_kernels {
    //! Without the Flex backend there is nothing to specialise: Burn's ops everywhere.
    use burn::nn::{Gelu, Linear};
    use burn::prelude::*;

    pub fn linear(layer: &Linear, x: Tensor<3>) -> Tensor<3> {
        layer.forward(x)
    }

    pub fn gelu(act: &Gelu, x: Tensor<3>) -> Tensor<3> {
        act.forward(x)
    }

    pub fn tied_head(x: Tensor<2>, embedding: Tensor<2>) -> Tensor<2> {
        x.matmul(embedding.transpose())
    }
}
pub mod flex_training;
pub mod fsutil;
pub mod generate;
pub mod host_memory;
pub mod kv_cache;
pub mod lora;
pub mod mlp;
pub mod model;
pub mod pretokenize;
pub mod sampling;
pub mod tokenizer;
pub mod tokenizer_files;
pub mod weights;

pub use classifier::{GptClassifier, Trainable};
pub use config::{EOT_TOKEN, GPT2_VOCAB_SIZE, GptConfig};
pub use device::DeviceSpec;
pub use lora::{LoraConfig, LoraTargets};
pub use error::{GptError, Result};
pub use model::Gpt;
pub use tokenizer::Tokenizer;

/// Burn, re-exported so that downstream crates use the exact same version.
pub use burn;
