//! `llmfs generate --model M --prompt P [...]`

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use gpt::Tokenizer;
use gpt::generate::{Completion, GenerateConfig, Padding, TokenStream};
use gpt::generate::sampling::Sampling;
use pipelines::runs::ModelRef;
use serde_json::json;

use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// The prompt; repeat the flag to generate for several prompts in one batch
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    #[arg(long, default_value_t = 50)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when the text contains this string (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past <|endoftext|>
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print tokens as they are generated
    #[arg(long)]
    pub stream: bool,
    /// Print JSON on stdout: one object per prompt (with --stream, one per token before them)
    #[arg(long)]
    pub json: bool,
    /// Where shorter prompts of a batch are padded (the output is the same either way)
    #[arg(long, value_enum, default_value = "left")]
    pub padding: PaddingArg,
    /// Recompute the whole sequence at every step instead of using the KV cache (slow; a reference)
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PaddingArg {
    Left,
    Right,
}

/// Greedy or sampled decoding: the flags `generate` and `generate-responses` share.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Always take the most likely token (the default unless a sampling flag is given)
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub greedy: bool,
    /// Sample with this temperature (default 1.0 when --top-k or --top-p is given)
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample among the k most likely tokens
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities add up to p
    #[arg(long)]
    pub top_p: Option<f64>,
}

impl SamplingArgs {
    pub fn sampling(&self) -> Sampling {
        let sampled = self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some();
        if self.greedy || !sampled {
            return Sampling::GREEDY;
        }
        Sampling { temperature: self.temperature.unwrap_or(1.0), top_k: self.top_k, top_p: self.top_p }
    }
}

impl Args {
    fn config(&self, tokenizer: &Tokenizer) -> GenerateConfig {
        let config = GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling: self.sampling.sampling(),
            seed: self.runtime.seed,
            stop: self.stop.clone(),
            padding: match self.padding {
                PaddingArg::Left => Padding::Left,
                PaddingArg::Right => Padding::Right,
            },
            use_cache: !self.no_cache,
            ..GenerateConfig::greedy(self.max_new_tokens)
        }
        .with_tokenizer(tokenizer);
        if self.ignore_eos { GenerateConfig { eos_tokens: Vec::new(), ..config } } else { config }
    }
}

pub fn run(args: Args) -> Result<()> {
    args.sampling.sampling().validate()?;
    let device = args.runtime.device()?;
    let load_start = Instant::now();
    let model_ref = ModelRef::resolve(&args.model);
    let tokenizer = model_ref.tokenizer()?;
    let config = args.config(&tokenizer);
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    let parameters = gpt::io::parameter_counts(&model).1;
    eprintln!("loaded {} ({parameters} parameters) on {device:?} in {:.1}s", args.model, load_start.elapsed().as_secs_f64());

    // Each prompt encoded with the tokenizer's defaults (Llama 3 adds <|begin_of_text|>, GPT-2 and Qwen nothing).
    let prompts: Vec<Vec<u32>> = args.prompt.iter().map(|p| tokenizer.try_encode(p)).collect::<gpt::Result<_>>()?;
    let start = Instant::now();
    let mut stream = TokenStream::new(&model, &prompts, &config)?;
    let mut stdout = std::io::stdout().lock();
    let single = prompts.len() == 1;
    if args.stream && !args.json && single {
        write!(stdout, "{}", args.prompt[0])?;
        stdout.flush()?;
    }
    for step in stream.by_ref() {
        for token in step? {
            if args.stream && args.json {
                writeln!(stdout, "{}", json!({ "row": token.row, "token": token.token, "text": token.text }))?;
            } else if args.stream && single {
                write!(stdout, "{}", token.text)?;
                stdout.flush()?;
            }
        }
    }
    let completions = stream.finish()?;
    let seconds = start.elapsed().as_secs_f64();
    let new_tokens: usize = completions.iter().map(|c| c.token_ids.len()).sum();
    if args.stream && !args.json && single {
        writeln!(stdout)?;
    }
    for (prompt, completion) in args.prompt.iter().zip(&completions) {
        if args.json {
            writeln!(stdout, "{}", completion_json(prompt, completion, seconds))?;
        } else if !(args.stream && single) {
            writeln!(stdout, "{prompt}{}", completion.text)?;
            if !single {
                writeln!(stdout, "---")?;
            }
        }
    }
    eprintln!("generated {new_tokens} tokens in {seconds:.2}s ({:.1} tokens/s)", new_tokens as f64 / seconds.max(1e-9));
    Ok(())
}

fn completion_json(prompt: &str, completion: &Completion, seconds: f64) -> serde_json::Value {
    json!({
        "prompt": prompt,
        "prompt_ids": completion.prompt_ids,
        "token_ids": completion.token_ids,
        "text": completion.text,
        "finish_reason": completion.finish_reason.as_str(),
        "seconds": seconds,
    })
}
