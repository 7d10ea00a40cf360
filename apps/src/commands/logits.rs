//! `llmfs logits --model M --ids 1,2,3 --out F.safetensors`

use std::path::PathBuf;

use anyhow::{Context, Result};
use gpt::burn::prelude::*;
use gpt::io::write_safetensors;
use gpt::models::CausalLm;
use pipelines::runs::ModelRef;

use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id (gpt2), a local HF-format directory, a run directory, or random:<preset>
    #[arg(long)]
    pub model: String,
    /// Comma-separated token ids, e.g. 6109,3626,6100,345
    #[arg(long, value_delimiter = ',', required_unless_present = "prompt", conflicts_with = "prompt")]
    pub ids: Vec<u32>,
    /// Text to tokenise instead of --ids
    #[arg(long)]
    pub prompt: Option<String>,
    /// Output safetensors file; holds `logits` [1, T, vocab] f32
    #[arg(long)]
    pub out: PathBuf,
    /// Print a one-line JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    let ids = match &args.prompt {
        // Encoded with the tokenizer's defaults, as `generate` encodes a prompt.
        Some(text) => model_ref.tokenizer()?.try_encode(text)?,
        None => args.ids.clone(),
    };
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    let (context, vocab) = (model.context_length(), model.vocab_size());
    anyhow::ensure!(!ids.is_empty(), "no token ids given");
    anyhow::ensure!(ids.len() <= context, "{} ids exceed the context window of {context}", ids.len());
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        anyhow::bail!("token id {bad} is outside the vocabulary (size {vocab})");
    }
    let t = ids.len();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, t]), &device);
    let logits = model.logits(input).into_data().convert::<f32>();
    let values = logits.as_slice::<f32>().map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
    let argmax_last = gpt::generate::sampling::argmax(&values[(t - 1) * vocab..]);
    write_safetensors(&args.out, &[("logits".to_string(), logits)]).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits [1, {t}, {vocab}] to {}", args.out.display());
    if args.json {
        let summary = serde_json::json!({
            "out": args.out, "shape": [1, t, vocab], "ids": ids, "argmax_last": argmax_last,
        });
        println!("{summary}");
    }
    Ok(())
}
