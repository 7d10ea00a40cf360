//! Generate text with GPT-2, streamed token by token.
//!
//!     cargo run --release --example generate -- [MODEL] [PROMPT]
//!
//! MODEL is `gpt2` (downloaded into the Hugging Face cache on first use), another preset or hub id,
//! a local HF-format directory, or `random:gpt2` for untrained weights without a download.

llmfs::gpt::use_mimalloc!();

use std::io::Write;

use llmfs::gpt::generate::{GenerateConfig, TokenStream};
use llmfs::gpt::generate::sampling::Sampling;
use llmfs::gpt::{DeviceSpec, Tokenizer};
use llmfs::pipelines::runs::load_model;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_name = args.next().unwrap_or_else(|| "gpt2".to_string());
    let prompt = args.next().unwrap_or_else(|| "Hello, I'm a language model,".to_string());

    let device = DeviceSpec::Auto.resolve()?;
    let model = load_model(&model_name, &device, 42)?;
    let tokenizer = Tokenizer::gpt2();
    let config = GenerateConfig {
        sampling: Sampling { temperature: 0.8, top_k: Some(50), top_p: Some(0.95) },
        seed: 42,
        ..GenerateConfig::greedy(60)
    };

    print!("{prompt}");
    for step in TokenStream::new(&model, &[tokenizer.encode(&prompt)], &config)? {
        for token in step? {
            print!("{}", token.text);
            std::io::stdout().flush()?;
        }
    }
    println!();
    Ok(())
}
