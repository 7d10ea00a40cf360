//! A conversation → the prompt the model continues, for `llmfs chat` and `llmfs serve`. An
//! instruction-tuned run (its `run.json` says `"config": {"task": "instruction"}`, as `llmfs
//! finetune instruct` writes it) gets the Alpaca prompt it was trained on, with the last user
//! message as the instruction; a model with a chat template (its `tokenizer_config.json`, or
//! `--chat-template`) gets the conversation rendered with it; any other model gets the message
//! contents joined by newlines.

use anyhow::Result;
use gpt::Tokenizer;
use gpt::text::{ChatMessage, ChatTemplate};
use pipelines::data::instruction::{InstructionRecord, format_input};
use pipelines::runs::ModelRef;

#[derive(Debug, Clone)]
pub enum ChatFormat {
    /// `format_input` with the last user message as the instruction, then `\n\n### Response:\n`.
    Alpaca,
    /// A chat template, with the start of an assistant turn at the end.
    Template(ChatTemplate),
    /// The contents of all messages, joined by `\n`.
    Plain,
}

impl ChatFormat {
    /// [`ChatFormat::Alpaca`] when `model` is a run directory (or a run's `model/` or `adapter/`)
    /// whose `run.json` has `config.task == "instruction"`; else the tokenizer's chat template when
    /// it has one; otherwise [`ChatFormat::Plain`].
    /// A run fine-tuned on conversations (`prompt_format: chat`) with a template keeps it.
    pub fn detect(model: &str, tokenizer: &Tokenizer) -> Result<Self> {
        let model_ref = ModelRef::resolve(model);
        let task = model_ref.task()?;
        let chat_run = task.as_deref() == Some("instruction") && model_ref.prompt_format()?.as_deref() == Some("chat");
        Ok(match (task.as_deref(), tokenizer.chat_template()) {
            (Some("instruction"), Some(template)) if chat_run => Self::Template(template.clone()),
            (Some("instruction"), _) => Self::Alpaca,
            (_, Some(template)) => Self::Template(template.clone()),
            _ => Self::Plain,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Alpaca => "alpaca (instruction-tuned run)",
            Self::Template(_) => "the model's chat template",
            Self::Plain => "plain (message contents joined by newlines)",
        }
    }

    /// The prompt for `messages`; an error (a message for the user) when there is nothing to
    /// answer or the template refuses the conversation (`raise_exception`).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        if messages.is_empty() {
            return Err("messages must hold at least one message".into());
        }
        match self {
            Self::Plain => Ok(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")),
            Self::Template(template) => template.render(messages, true).map_err(|e| e.to_string()),
            Self::Alpaca => {
                let instruction = messages
                    .iter()
                    .rev()
                    .find(|m| m.role == "user")
                    .map(|m| m.content.clone())
                    .ok_or("messages must hold a user message (the instruction)")?;
                let record = InstructionRecord { instruction, input: String::new(), output: String::new() };
                Ok(format!("{}\n\n### Response:\n", format_input(&record)))
            }
        }
    }

    /// The prompt's token ids: a rendered chat template holds its own special tokens, so it is
    /// encoded without adding any; the other formats with the tokenizer's defaults.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let text = self.render(messages)?;
        let ids = match self {
            Self::Template(_) => tokenizer.try_encode_ordinary(&text),
            _ => tokenizer.try_encode(&text),
        };
        ids.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, text: &str) -> ChatMessage {
        ChatMessage::new(role, text)
    }

    #[test]
    fn alpaca_uses_the_last_user_message_as_the_instruction() {
        let messages = [message("system", "Be brief."), message("user", "Name a colour.")];
        let prompt = ChatFormat::Alpaca.render(&messages).unwrap();
        assert!(prompt.starts_with("Below is an instruction that describes a task."), "{prompt}");
        assert!(prompt.ends_with("### Instruction:\nName a colour.\n\n### Response:\n"), "{prompt}");
        assert_eq!(ChatFormat::Plain.render(&messages).unwrap(), "Be brief.\nName a colour.");
        assert!(ChatFormat::Plain.render(&[]).is_err());
        assert!(ChatFormat::Alpaca.render(&[message("system", "x")]).is_err());
    }

    #[test]
    fn detects_instruction_runs_and_chat_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("model")).unwrap();
        let path = dir.path().display().to_string();
        let gpt2 = Tokenizer::gpt2();
        assert!(matches!(ChatFormat::detect(&path, &gpt2).unwrap(), ChatFormat::Plain));
        std::fs::write(dir.path().join("run.json"), r#"{"config": {"task": "instruction"}, "llmfs_version": "0.1.0"}"#).unwrap();
        assert!(matches!(ChatFormat::detect(&path, &gpt2).unwrap(), ChatFormat::Alpaca));
        assert!(matches!(ChatFormat::detect(&dir.path().join("model").display().to_string(), &gpt2).unwrap(), ChatFormat::Alpaca));
        assert!(matches!(ChatFormat::detect("gpt2", &gpt2).unwrap(), ChatFormat::Plain));
        let qwen = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3-tiny");
        let tokenizer = Tokenizer::from_model_dir(&qwen).unwrap();
        // A run fine-tuned on conversations answers in its chat template.
        std::fs::write(dir.path().join("run.json"), r#"{"config": {"task": "instruction", "details": {"prompt_format": "chat"}}}"#).unwrap();
        assert!(matches!(ChatFormat::detect(&path, &tokenizer).unwrap(), ChatFormat::Template(_)));
        assert!(matches!(ChatFormat::detect(&path, &gpt2).unwrap(), ChatFormat::Alpaca));
        let format = ChatFormat::detect(&qwen.display().to_string(), &tokenizer).unwrap();
        let prompt = format.render(&[message("system", "Be brief."), message("user", "Hi")]).unwrap();
        assert_eq!(prompt, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }
}
