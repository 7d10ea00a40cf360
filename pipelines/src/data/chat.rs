//! Conversations as a model reads them, and which of their tokens the loss learns.
//!
//! A conversation is rendered with the model's chat template (or `--chat-template`). A model
//! without one (GPT-2, base models) reads a single exchange (optional system + user + assistant)
//! as the Alpaca prompt, exactly as Alpaca records (the system message replaces the preamble),
//! and longer conversations with [`PLAIN_TEMPLATE`].
//!
//! The assistant turns are found in the rendered text, so they are right for any template: turn
//! `i` starts where `messages[..i]` rendered with the generation prompt ends, and ends where
//! `messages[..=i]` rendered alone ends. The full rendering is tokenised once, and a token is
//! trained when its bytes overlap an assistant span: the assistant's content and the end of turn
//! the template writes after it (`<|im_end|>`, `<|eot_id|>`).

use std::ops::Range;

use anyhow::{Context, Result, bail};
use gpt::Tokenizer;
use gpt::text::{ChatMessage, ChatTemplate};

use super::conversation::Conversation;
use super::instruction::{InstructionRecord, PREAMBLE, TokenizedExample, encode, format_input_with, tokenize_alpaca};

/// The template of models without one, for conversations longer than one exchange: a system
/// message as a first paragraph, then `### User:` / `### Assistant:` turns (the Alpaca prompt's
/// `###` headers), each assistant turn closed by the end-of-sequence token, which is what
/// teaches the model to stop.
pub const PLAIN_TEMPLATE: &str = "{{- bos_token }}
{%- for message in messages %}
{%- if message.role == 'system' %}{{ message.content + '\\n\\n' }}
{%- elif message.role == 'user' %}{{ '### User:\\n' + message.content + '\\n\\n' }}
{%- else %}{{ '### Assistant:\\n' + message.content + eos_token }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}";

/// How conversations become text for one model.
#[derive(Clone, Debug)]
pub struct ChatRendering {
    template: ChatTemplate,
    /// No template of the model's: single exchanges use the Alpaca prompt.
    alpaca_single_turns: bool,
    /// What renders: "the model's chat template", a file, or "plain".
    pub origin: String,
}

impl ChatRendering {
    /// `template` (from `--chat-template`, with its origin), else the model's, else
    /// [`PLAIN_TEMPLATE`] with Alpaca prompts for single exchanges.
    pub fn new(tokenizer: &Tokenizer, template: Option<(ChatTemplate, String)>) -> Result<Self> {
        if let Some((template, origin)) = template {
            return Ok(Self { template, alpaca_single_turns: false, origin });
        }
        if let Some(template) = tokenizer.chat_template() {
            return Ok(Self { template: template.clone(), alpaca_single_turns: false, origin: "the model's chat template".into() });
        }
        let (bos, eos) = tokenizer.special_token_texts();
        let template = ChatTemplate::new(PLAIN_TEMPLATE.into(), bos, eos, "the plain chat template")?;
        Ok(Self { template, alpaca_single_turns: true, origin: "plain (Alpaca prompt for single exchanges)".into() })
    }

    /// The conversation as an Alpaca record and its preamble, when it is rendered as one.
    fn alpaca(&self, conversation: &Conversation) -> Option<(String, InstructionRecord)> {
        let (system, user, assistant) = conversation.single_turn().filter(|_| self.alpaca_single_turns)?;
        let record = InstructionRecord { instruction: user.into(), input: String::new(), output: assistant.into() };
        Some((system.unwrap_or(PREAMBLE).to_string(), record))
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        Ok(self.template.render(messages, add_generation_prompt)?)
    }

    /// The byte ranges of the assistant turns in `full`, the rendering of all `messages`.
    pub fn assistant_spans(&self, messages: &[ChatMessage], full: &str) -> Result<Vec<Range<usize>>> {
        let mut spans = Vec::new();
        for (i, message) in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let before = self.render(&messages[..i], true)?;
            if !full.starts_with(&before) {
                bail!("the chat template renders the conversation before assistant turn {i} differently from the whole; cannot find the turn");
            }
            let alone = self.render(&messages[..=i], false)?;
            let end = if full.starts_with(&alone) {
                alone.len()
            } else {
                // Some templates write the last turn differently (Qwen3 adds an empty <think>
                // block): find the content and the end of turn that `alone` writes after it.
                let content = message.content.trim();
                let tail = alone.rfind(content).map(|at| &alone[at..]).filter(|_| !content.is_empty());
                let found = tail.and_then(|tail| full[before.len()..].find(tail).map(|at| before.len() + at + tail.len()));
                found.with_context(|| format!("cannot find assistant turn {i} in the chat template's rendering"))?
            };
            spans.push(before.len()..end);
        }
        Ok(spans)
    }

    /// A conversation tokenised for training: the rendering's ids, and as trained the tokens
    /// that overlap an assistant span (an Alpaca-rendered exchange: the Alpaca example).
    pub fn tokenize(&self, conversation: &Conversation, tokenizer: &Tokenizer) -> Result<TokenizedExample> {
        if let Some((preamble, record)) = self.alpaca(conversation) {
            return tokenize_alpaca(&preamble, &record, tokenizer);
        }
        let full = self.render(&conversation.messages, false)?;
        let spans = self.assistant_spans(&conversation.messages, &full)?;
        let (ids, offsets) = tokenizer.encode_rendered(&full)?;
        let trained: Vec<bool> =
            offsets.iter().map(|token| spans.iter().any(|span| token.start < span.end && span.start < token.end)).collect();
        let prompt_len = trained.iter().position(|&t| t).unwrap_or(ids.len());
        Ok(TokenizedExample { ids, prompt_len, trained: Some(trained) })
    }

    /// What the model answers: the conversation up to its last assistant turn, with the start of
    /// an assistant turn (an Alpaca-rendered exchange: the Alpaca prompt), and its ids.
    pub fn prompt(&self, conversation: &Conversation, tokenizer: &Tokenizer) -> Result<(String, Vec<u32>)> {
        if let Some((preamble, record)) = self.alpaca(conversation) {
            let text = format_input_with(&preamble, &record);
            let ids = encode(tokenizer, &text)?;
            return Ok((text, ids));
        }
        let text = self.render(conversation.prompt_messages(), true)?;
        let (ids, _) = tokenizer.encode_rendered(&text)?;
        Ok((text, ids))
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::data::conversation::{InstructionData, read_instruction_data};
    use crate::data::instruction::{CollateConfig, InstructionDataset, full_text};
    use crate::train::IGNORE_INDEX;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
    }

    fn conversation(roles_and_texts: &[(&str, &str)]) -> Conversation {
        Conversation { messages: roles_and_texts.iter().map(|(r, t)| ChatMessage::new(r, t)).collect() }
    }

    fn two_turns() -> Conversation {
        conversation(&[("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4."), ("user", "And 3+3?"), ("assistant", "6, of course.")])
    }

    /// The decoded runs of consecutive trained tokens.
    fn trained_texts(tokenizer: &Tokenizer, ids: &[u32], trained: &[bool]) -> Vec<String> {
        let mut runs: Vec<Vec<u32>> = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            match (trained[k], k > 0 && trained[k - 1]) {
                (true, true) => runs.last_mut().unwrap().push(id),
                (true, false) => runs.push(vec![id]),
                _ => {}
            }
        }
        runs.iter().map(|run| tokenizer.decode(run).unwrap()).collect()
    }

    #[test]
    fn the_loss_learns_exactly_the_assistant_turns_of_any_template() {
        // Each template's end of turn, written after the content, is learned with it; Qwen3
        // writes an empty <think> block into the last assistant turn, which is learned too.
        let cases: [(&str, [&str; 2]); 2] = [
            ("llama-tiny", ["4.<|eot_id|>", "6, of course.<|eot_id|>"]),
            ("qwen3-tiny", ["4.<|im_end|>\n", "<think>\n\n</think>\n\n6, of course.<|im_end|>\n"]),
        ];
        for (name, want) in cases {
            let tokenizer = Tokenizer::from_model_dir(&fixture(name)).unwrap();
            let rendering = ChatRendering::new(&tokenizer, None).unwrap();
            let chat = two_turns();
            let example = rendering.tokenize(&chat, &tokenizer).unwrap();
            // The ids are the template's rendering tokenised, as generation reads a prompt.
            let (_, ids) = tokenizer.apply_chat_template(&chat.messages, false, None).unwrap();
            assert_eq!(example.ids, ids, "{name}");
            let trained = example.trained.clone().unwrap();
            assert_eq!(trained_texts(&tokenizer, &example.ids, &trained), want, "{name}");

            // The batch: with the prompt masked, exactly the targets that predict those tokens.
            let data = InstructionDataset::tokenize(std::slice::from_ref(&chat), &tokenizer, |c| rendering.tokenize(c, &tokenizer)).unwrap();
            let masked = data.collate(&[0], &CollateConfig { mask_prompt: true, allowed_max_length: None });
            let n = example.ids.len();
            assert_eq!(masked.len, n);
            for t in 0..n {
                let want = if t + 1 < n && trained[t + 1] { example.ids[t + 1] as i64 } else { IGNORE_INDEX };
                assert_eq!(masked.targets[t], want, "{name}: target {t}");
            }
            // --train-on all: every next token of the rendering (the appended end is padding).
            let all = data.collate(&[0], &CollateConfig { mask_prompt: false, allowed_max_length: None });
            assert_eq!(all.counted_targets(), n - 1, "{name}");

            // The prompt stops where the last assistant turn starts.
            let (prompt, _) = rendering.prompt(&chat, &tokenizer).unwrap();
            let full = rendering.render(&chat.messages, false).unwrap();
            let header = if name == "llama-tiny" { "And 3+3?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" } else { "And 3+3?<|im_end|>\n<|im_start|>assistant\n" };
            assert!(full.starts_with(&prompt) && prompt.ends_with(header), "{prompt:?}");
            assert_eq!(chat.reference(), "6, of course.");
        }
    }

    #[test]
    fn sharegpt_and_openai_conversations_give_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let openai = dir.path().join("openai.jsonl");
        let sharegpt = dir.path().join("sharegpt.jsonl");
        std::fs::write(
            &openai,
            concat!(
                r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#,
                "\n",
                r#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}"#,
                "\n"
            ),
        )
        .unwrap();
        std::fs::write(
            &sharegpt,
            concat!(
                r#"{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}"#,
                "\n\n",
                r#"{"conversations": [{"from": "user", "value": "2+2?"}, {"from": "assistant", "value": "4"}, {"from": "human", "value": "3+3?"}, {"from": "gpt", "value": "6"}]}"#,
                "\n"
            ),
        )
        .unwrap();
        let (InstructionData::Chat(a), InstructionData::Chat(b)) = (read_instruction_data(&openai).unwrap(), read_instruction_data(&sharegpt).unwrap()) else {
            panic!("not read as conversations");
        };
        assert_eq!(a, b);
        for name in ["llama-tiny", "qwen3-tiny"] {
            let tokenizer = Tokenizer::from_model_dir(&fixture(name)).unwrap();
            let rendering = ChatRendering::new(&tokenizer, None).unwrap();
            let batch = |conversations: &[Conversation]| {
                let data = InstructionDataset::tokenize(conversations, &tokenizer, |c| rendering.tokenize(c, &tokenizer)).unwrap();
                data.collate(&[0, 1], &CollateConfig { mask_prompt: true, ..CollateConfig::default() })
            };
            let (x, y) = (batch(&a), batch(&b));
            assert_eq!(x, y, "{name}");
            assert!(x.counted_targets() > 0);
        }
    }

    #[test]
    fn gpt2_single_exchanges_are_alpaca_records_and_longer_ones_use_the_plain_template() {
        let tokenizer = Tokenizer::gpt2();
        let rendering = ChatRendering::new(&tokenizer, None).unwrap();
        let record = InstructionRecord { instruction: "Name a colour.".into(), input: String::new(), output: "Blue.".into() };
        let alpaca = InstructionDataset::new(std::slice::from_ref(&record), &tokenizer).unwrap();
        let chat = conversation(&[("user", "Name a colour."), ("assistant", "Blue.")]);
        let example = rendering.tokenize(&chat, &tokenizer).unwrap();
        assert_eq!(example.ids, alpaca.token_ids[0]);
        assert_eq!(example.ids, tokenizer.encode_ordinary(&full_text(&record)));
        assert_eq!((example.prompt_len, example.trained), (alpaca.prompt_lens[0], None));
        assert_eq!(rendering.prompt(&chat, &tokenizer).unwrap().0, crate::data::instruction::format_input(&record));
        // A system message takes the preamble's place.
        let with_system = conversation(&[("system", "Answer in one word."), ("user", "Name a colour."), ("assistant", "Blue.")]);
        let (prompt, _) = rendering.prompt(&with_system, &tokenizer).unwrap();
        assert_eq!(prompt, "Answer in one word.\n\n### Instruction:\nName a colour.");

        // Two exchanges: the plain template, each assistant turn closed by <|endoftext|> (50256).
        let chat = two_turns();
        let full = rendering.render(&chat.messages, false).unwrap();
        assert_eq!(
            full,
            "<|endoftext|>Be brief.\n\n### User:\nWhat is 2+2?\n\n### Assistant:\n4.<|endoftext|>### User:\nAnd 3+3?\n\n### Assistant:\n6, of course.<|endoftext|>"
        );
        let example = rendering.tokenize(&chat, &tokenizer).unwrap();
        assert_eq!(example.ids.iter().filter(|&&id| id == gpt::EOT_TOKEN).count(), 3);
        assert_eq!(trained_texts(&tokenizer, &example.ids, example.trained.as_deref().unwrap()), ["4.<|endoftext|>", "6, of course.<|endoftext|>"]);
        let (prompt, ids) = rendering.prompt(&chat, &tokenizer).unwrap();
        assert!(prompt.ends_with("### User:\nAnd 3+3?\n\n### Assistant:\n") && example.ids.starts_with(&ids), "{prompt:?}");
    }

    #[test]
    fn a_template_file_overrides_the_models() {
        let tokenizer = Tokenizer::from_model_dir(&fixture("qwen3-tiny")).unwrap();
        let source = "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}\
                      {% if add_generation_prompt %}[assistant] {% endif %}";
        let (bos, eos) = tokenizer.special_token_texts();
        let template = ChatTemplate::new(source.into(), bos, eos, "t.jinja").unwrap();
        let rendering = ChatRendering::new(&tokenizer, Some((template, "t.jinja".into()))).unwrap();
        // trim_blocks eats the newline after `{% endif %}`, as in transformers.
        let full = rendering.render(&two_turns().messages, false).unwrap();
        assert_eq!(full, "[system] Be brief.[user] What is 2+2?[assistant] 4.<|im_end|>[user] And 3+3?[assistant] 6, of course.<|im_end|>");
        let example = rendering.tokenize(&two_turns(), &tokenizer).unwrap();
        assert_eq!(trained_texts(&tokenizer, &example.ids, example.trained.as_deref().unwrap()), ["4.<|im_end|>", "6, of course.<|im_end|>"]);
        assert_eq!(rendering.origin, "t.jinja");
    }
}
