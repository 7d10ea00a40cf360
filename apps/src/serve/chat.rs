//! OpenAI chat messages → the conversation [`ChatFormat`] renders: roles checked (a bad one is a
//! 400 naming the message), each content as text (its text parts joined).

use gpt::Tokenizer;
use gpt::text::ChatMessage as Turn;

use super::openai::{ApiError, ChatMessage, Content};
use crate::chat_format::ChatFormat;

/// The prompt's token ids for `messages` in `format` (400 when there is nothing to answer, a role
/// is unknown, or the chat template refuses the conversation).
pub fn encode(format: &ChatFormat, tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    format.encode(tokenizer, &turns(messages)?).map_err(|e| ApiError::invalid(e, Some("messages")))
}

fn turns(messages: &[ChatMessage]) -> Result<Vec<Turn>, ApiError> {
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        if !matches!(message.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
            return Err(ApiError::invalid(
                format!("messages[{i}].role must be system, developer, user, assistant or tool, got {:?}", message.role),
                Some("messages"),
            ));
        }
        turns.push(Turn::new(&message.role, &content_text(message.content.as_ref())));
    }
    Ok(turns)
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
    fn bad_messages_are_400s() {
        let gpt2 = Tokenizer::gpt2();
        assert_eq!(encode(&ChatFormat::Plain, &gpt2, &[]).unwrap_err().status, 400);
        assert_eq!(encode(&ChatFormat::Plain, &gpt2, &[message("robot", "x")]).unwrap_err().status, 400);
        assert_eq!(encode(&ChatFormat::Alpaca, &gpt2, &[message("system", "x")]).unwrap_err().status, 400);
        assert_eq!(encode(&ChatFormat::Plain, &gpt2, &[message("system", "a"), message("user", "b")]).unwrap(), gpt2.encode("a\nb"));
    }
}
