//! Winogrande with lm-eval's partial scoring (`lm_eval/tasks/winogrande/preprocess_winogrande.py`):
//! each option fills the blank `_` in the *context* (the sentence up to the blank), and the rest of
//! the sentence after the blank is the one continuation scored after either context. acc only.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use super::{Doc, Output, Sampler, TARGET_DELIMITER, Task, text};

pub static WINOGRANDE: Task = Task {
    name: "winogrande",
    dataset: "allenai/winogrande",
    config: Some("winogrande_xl"),
    split: "validation",
    output: Output::MultipleInput,
    metrics: &["acc"],
    templates: [
        ("doc_to_text", "!function preprocess_winogrande.doc_to_text"),
        ("doc_to_target", "!function preprocess_winogrande.doc_to_target"),
        ("doc_to_choice", "!function preprocess_winogrande.doc_to_choice"),
    ],
    version: 1.0,
    fewshot_split: None,
    training_split: Some("train"),
    sampler: Sampler::Random,
    description: "",
    render: winogrande,
};

fn winogrande(doc: &Map<String, Value>) -> Result<Doc> {
    let sentence = text(doc, "sentence")?;
    let blank = sentence.find('_').context("the sentence has no blank `_`")?;
    // Python's strip(): white space off both ends of what follows the blank.
    let target = sentence[blank + 1..].trim_matches(super::is_python_space);
    let gold = match text(doc, "answer")? {
        "1" => 0,
        "2" => 1,
        other => bail!("`answer` is {other:?}, not \"1\" or \"2\""),
    };
    let contexts = [text(doc, "option1")?, text(doc, "option2")?].map(|option| format!("{}{option}", &sentence[..blank]));
    let requests = contexts.iter().map(|c| (c.clone(), format!("{TARGET_DELIMITER}{target}"))).collect();
    Ok(Doc { requests, gold, choices: contexts.to_vec() })
}
