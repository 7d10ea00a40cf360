//! `llmfs tokenize --model M (--text T | --chat FILE.json) [--add-generation-prompt] [--json]`:
//! the token ids a model sees for a text or a conversation rendered with its chat template.

use std::path::PathBuf;

use anyhow::{Context, Result};
use gpt::Tokenizer;
use gpt::text::{ChatMessage, ChatTemplate};
use pipelines::runs::ModelRef;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A preset/hub id, a local HF-format directory (its tokenizer.json; GPT-2's BPE for GPT-2), or a run directory
    #[arg(long)]
    pub model: String,
    /// The text to encode (with the tokenizer's default special tokens: Llama 3 adds <|begin_of_text|>)
    #[arg(long, required_unless_present = "chat", conflicts_with = "chat")]
    pub text: Option<String>,
    /// A JSON list of {"role", "content"} messages, rendered with the model's chat template
    #[arg(long)]
    pub chat: Option<PathBuf>,
    /// With --chat: end with the start of an assistant turn (what a model answers after)
    #[arg(long, requires = "chat")]
    pub add_generation_prompt: bool,
    /// With --text: add no special tokens (as `add_special_tokens=False`)
    #[arg(long, conflicts_with = "chat")]
    pub no_special_tokens: bool,
    /// A Jinja2 chat template file to use instead of the model's
    #[arg(long, requires = "chat")]
    pub chat_template: Option<PathBuf>,
    /// Print one JSON line {"ids": [...], "text": "..."} (text = the input, or the rendered chat)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = ModelRef::resolve(&args.model).tokenizer()?;
    let (text, ids) = match (&args.text, &args.chat) {
        (Some(text), _) if args.no_special_tokens => (text.clone(), tokenizer.try_encode_ordinary(text)?),
        (Some(text), _) => (text.clone(), tokenizer.try_encode(text)?),
        (None, Some(path)) => {
            let messages = read_conversation(path)?;
            let template = args.chat_template.as_deref().map(|file| read_template(file, &tokenizer)).transpose()?;
            tokenizer.apply_chat_template(&messages, args.add_generation_prompt, template.as_ref())?
        }
        (None, None) => anyhow::bail!("pass --text or --chat"),
    };
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids, "text": text }));
    } else {
        println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","));
        eprintln!("{} tokens", ids.len());
    }
    Ok(())
}

/// A conversation file: a JSON list of messages, each with a `role` and a `content` string.
pub fn read_conversation(path: &std::path::Path) -> Result<Vec<ChatMessage>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        anyhow::anyhow!("{}: not a JSON list of {{\"role\", \"content\"}} messages: at {}: {}", path.display(), e.path(), e.inner())
    })
}

/// `--chat-template FILE`: a Jinja2 template, with the special-token texts of the model's `tokenizer`.
pub fn read_template(file: &std::path::Path, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
    let source = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (bos, eos) = tokenizer.special_token_texts();
    Ok(ChatTemplate::new(source, bos, eos, &file.display().to_string())?)
}
