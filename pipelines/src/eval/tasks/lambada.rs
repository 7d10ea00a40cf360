//! LAMBADA (OpenAI's version, `lm_eval/tasks/lambada/lambada_openai.yaml`): the text but its last
//! word is the context, " " + the last word the continuation (split on single spaces, as the
//! template's `text.split(' ')`). acc = greedy decoding gives the word; perplexity = exp of the
//! mean negative log-likelihood of the words.

use anyhow::Result;
use serde_json::{Map, Value};

use super::{Doc, Output, Sampler, Task, text};

pub static LAMBADA_OPENAI: Task = Task {
    name: "lambada_openai",
    dataset: "EleutherAI/lambada_openai",
    config: Some("default"),
    split: "test",
    output: Output::Loglikelihood,
    metrics: &["perplexity", "acc"],
    templates: [
        ("doc_to_text", "{{text.split(' ')[:-1]|join(' ')}}"),
        ("doc_to_target", "{{' '+text.split(' ')[-1]}}"),
        ("doc_to_choice", ""),
    ],
    version: 1.0,
    fewshot_split: None,
    training_split: None,
    sampler: Sampler::Random,
    description: "",
    render: lambada,
};

fn lambada(doc: &Map<String, Value>) -> Result<Doc> {
    let text = text(doc, "text")?;
    let (context, word) = text.rsplit_once(' ').unwrap_or(("", text));
    Ok(Doc { requests: vec![(context.to_string(), format!(" {word}"))], gold: 0, choices: Vec::new() })
}
