//! A chat turn → the prompt the model continues. An instruction-tuned run (its `run.json` says
//! `"config": {"task": "instruction"}`, as `llmfs finetune instruct` writes it) gets the Alpaca prompt it was trained on, with the last user message as
//! the instruction; a model with a chat template (its `tokenizer_config.json`) gets the
//! conversation rendered with it; any other model gets the message contents joined by newlines.

use anyhow::Result;
use gpt::Tokenizer;
use gpt::text::{ChatMessage as TemplateMessage, ChatTemplate};
use pipelines::data::instruction::{InstructionRecord, format_input};
use pipelines::runs::ModelRef;

use super::openai::{ApiError, ChatMessage, Content};

/// How chat messages become a prompt.
#[derive(Debug, Clone)]
pub enum ChatFormat {
    /// `format_input` with the last user message as the instruction, then `\n\n### Response:\n`.
    Alpaca,
    /// The model's chat template, with the start of an assistant turn at the end.
    Template(ChatTemplate),
    /// The contents of all messages, joined by `\n`.
    Plain,
}

impl ChatFormat {
    /// [`ChatFormat::Alpaca`] when `model` is a run directory (or a run's `model/` or `adapter/`)
    /// whose `run.json` has `config.task == "instruction"`; else the tokenizer's chat template when
    /// it has one; otherwise [`ChatFormat::Plain`].
    pub fn detect(model: &str, tokenizer: &Tokenizer) -> Result<Self> {
        let task = ModelRef::resolve(model).task()?;
        Ok(match (task.as_deref(), tokenizer.chat_template()) {
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

    /// The prompt's token ids: a rendered chat template holds its own special tokens, so it is
    /// encoded without adding any; the other formats with the tokenizer's defaults.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
        let text = self.render(messages)?;
        let ids = match self {
            Self::Template(_) => tokenizer.try_encode_ordinary(&text),
            _ => tokenizer.try_encode(&text),
        };
        ids.map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))
    }

    /// The prompt for `messages` (400 when there is nothing to answer).
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::invalid("messages must hold at least one message", Some("messages")));
        }
        let mut texts = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            if !matches!(message.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role must be system, developer, user, assistant or tool, got {:?}", message.role),
                    Some("messages"),
                ));
            }
            texts.push(content_text(message.content.as_ref()));
        }
        match self {
            Self::Plain => Ok(texts.join("\n")),
            Self::Template(template) => {
                let turns: Vec<TemplateMessage> = messages.iter().zip(&texts).map(|(m, text)| TemplateMessage::new(&m.role, text)).collect();
                // A template's own checks (`raise_exception`: roles out of order ...) are the client's 400.
                template.render(&turns, true).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))
            }
            Self::Alpaca => {
                let instruction = messages
                    .iter()
                    .zip(&texts)
                    .rev()
                    .find(|(m, _)| m.role == "user")
                    .map(|(_, text)| text.clone())
                    .ok_or_else(|| ApiError::invalid("messages must hold a user message (the instruction)", Some("messages")))?;
                let record = InstructionRecord { instruction, input: String::new(), output: String::new() };
                Ok(format!("{}\n\n### Response:\n", format_input(&record)))
            }
        }
    }
}

/// A message's text: the string, or its text parts joined.
fn content_text(content: Option<&Content>) -> String {
    match content {
        None => String::new(),
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Parts(parts)) => {
            parts.iter().filter(|p| p.kind == "text").filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, text: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: Some(Content::Text(text.into())) }
    }

    #[test]
    fn alpaca_uses_the_last_user_message_as_the_instruction() {
        let messages = [message("system", "Be brief."), message("user", "Name a colour.")];
        let prompt = ChatFormat::Alpaca.render(&messages).unwrap();
        assert!(prompt.starts_with("Below is an instruction that describes a task."), "{prompt}");
        assert!(prompt.ends_with("### Instruction:\nName a colour.\n\n### Response:\n"), "{prompt}");
        assert_eq!(ChatFormat::Plain.render(&messages).unwrap(), "Be brief.\nName a colour.");
    }

    #[test]
    fn bad_messages_are_400s() {
        assert_eq!(ChatFormat::Plain.render(&[]).unwrap_err().status, 400);
        assert_eq!(ChatFormat::Plain.render(&[message("robot", "x")]).unwrap_err().status, 400);
        assert_eq!(ChatFormat::Alpaca.render(&[message("system", "x")]).unwrap_err().status, 400);
    }

    #[test]
    fn detects_instruction_runs() {
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
        let format = ChatFormat::detect(&qwen.display().to_string(), &tokenizer).unwrap();
        let prompt = format.render(&[message("system", "Be brief."), message("user", "Hi")]).unwrap();
        assert_eq!(prompt, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }
}
