//! `llmfs chat --model M [--system S]`: a multi-turn conversation in the terminal, rendered with
//! the model's chat template (see [`ChatFormat`]), each answer streamed as it is generated.
//! `/reset` starts over (keeping `--system`), `/exit` or end of input quits. Reads stdin line by
//! line, so a conversation can be piped in too.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use gpt::generate::{GenerateConfig, TokenStream};
use gpt::text::ChatMessage;
use pipelines::runs::ModelRef;

use super::generate::SamplingArgs;
use super::tokenize::read_template;
use crate::chat_format::ChatFormat;
use crate::runtime::RuntimeArgs;
use pipelines::runs::WeightArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id, a local HF-format directory, or a run directory
    #[arg(long)]
    pub model: String,
    /// A system message at the start of the conversation
    #[arg(long)]
    pub system: Option<String>,
    /// A Jinja2 chat template file to use instead of the model's
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// The longest answer, in tokens
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: Args) -> Result<()> {
    args.sampling.sampling().validate()?;
    let device = args.runtime.device()?;
    let model_ref = ModelRef::resolve(&args.model);
    let tokenizer = model_ref.tokenizer()?;
    let format = match &args.chat_template {
        Some(file) => ChatFormat::Template(read_template(file, &tokenizer)?),
        None => ChatFormat::detect(&args.model, &tokenizer)?,
    };
    let start = Instant::now();
    let model = args.weights.load(&model_ref, &device, args.runtime.seed)?;
    eprintln!(
        "loaded {} in {:.1}s; chat format: {}. /reset starts over, /exit quits.",
        args.model,
        start.elapsed().as_secs_f64(),
        format.name()
    );
    let config = GenerateConfig {
        sampling: args.sampling.sampling(),
        seed: args.runtime.seed,
        ..GenerateConfig::greedy(args.max_new_tokens)
    }
    .with_tokenizer(&tokenizer);
    let opening: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let mut messages = opening.clone();
    let mut stdout = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    for turn in 0u64.. {
        eprint!("> ");
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = opening.clone();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", &line));
        let prompt = match format.encode(&tokenizer, &messages) {
            Ok(prompt) => prompt,
            Err(message) => {
                // The template refused the conversation: say why and drop the turn.
                eprintln!("error: {message}");
                messages.pop();
                continue;
            }
        };
        // Each turn samples with its own seed, so a conversation replays the same way.
        let config = GenerateConfig { seed: config.seed.wrapping_add(turn), ..config.clone() };
        let mut stream = TokenStream::new(&model, &[prompt], &config)?;
        for step in stream.by_ref() {
            for token in step? {
                write!(stdout, "{}", token.text)?;
                stdout.flush()?;
            }
        }
        let answer = stream.finish()?.remove(0);
        writeln!(stdout)?;
        messages.push(ChatMessage::new("assistant", &answer.text));
    }
    Ok(())
}
