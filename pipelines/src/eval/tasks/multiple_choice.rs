//! The multiple-choice tasks: one context, one continuation per choice (" " + the choice), as
//! their lm-eval YAMLs (`lm_eval/tasks/arc/arc_easy.yaml`, `openbookqa/openbookqa.yaml`,
//! `piqa/piqa.yaml`, `hellaswag/hellaswag.yaml` + its `utils.py`).

use std::sync::LazyLock;

use anyhow::{Context, Result, bail};
use regex::Regex;
use serde_json::{Map, Value};

use super::{Doc, Output, Sampler, Task, strings, text};

const ACC_NORM: &[&str] = &["acc", "acc_norm"];

pub static ARC_EASY: Task = Task {
    name: "arc_easy",
    dataset: "allenai/ai2_arc",
    config: Some("ARC-Easy"),
    split: "test",
    output: Output::MultipleChoice,
    metrics: ACC_NORM,
    templates: [
        ("doc_to_text", "Question: {{question}}\nAnswer:"),
        ("doc_to_target", "{{choices.label.index(answerKey)}}"),
        ("doc_to_choice", "{{choices.text}}"),
    ],
    version: 1.0,
    fewshot_split: None,
    training_split: Some("train"),
    sampler: Sampler::Random,
    description: "",
    render: arc,
};

pub static ARC_CHALLENGE: Task = Task { name: "arc_challenge", config: Some("ARC-Challenge"), ..ARC_EASY };

pub static OPENBOOKQA: Task = Task {
    name: "openbookqa",
    dataset: "allenai/openbookqa",
    config: Some("main"),
    split: "test",
    output: Output::MultipleChoice,
    metrics: ACC_NORM,
    templates: [
        ("doc_to_text", "question_stem"),
        ("doc_to_target", "{{choices.label.index(answerKey.lstrip())}}"),
        ("doc_to_choice", "{{choices.text}}"),
    ],
    version: 1.0,
    fewshot_split: None,
    training_split: Some("train"),
    sampler: Sampler::Random,
    description: "",
    render: openbookqa,
};

pub static PIQA: Task = Task {
    name: "piqa",
    dataset: "baber/piqa",
    config: None,
    split: "validation",
    output: Output::MultipleChoice,
    metrics: ACC_NORM,
    templates: [("doc_to_text", "Question: {{goal}}\nAnswer:"), ("doc_to_target", "label"), ("doc_to_choice", "{{[sol1, sol2]}}")],
    version: 1.0,
    fewshot_split: None,
    training_split: Some("train"),
    sampler: Sampler::Random,
    description: "",
    render: piqa,
};

pub static HELLASWAG: Task = Task {
    name: "hellaswag",
    dataset: "Rowan/hellaswag",
    config: None,
    split: "validation",
    output: Output::MultipleChoice,
    metrics: ACC_NORM,
    templates: [("doc_to_text", "{{query}}"), ("doc_to_target", "{{label}}"), ("doc_to_choice", "choices")],
    version: 1.0,
    fewshot_split: None,
    training_split: Some("train"),
    sampler: Sampler::Random,
    description: "",
    render: hellaswag,
};

/// ARC: `Question: {question}\nAnswer:`, gold = the index of `answerKey` among `choices.label`
/// (letters, or digits in some rows).
fn arc(doc: &Map<String, Value>) -> Result<Doc> {
    let (choices, labels) = choices_and_labels(doc)?;
    let gold = index_of(&labels, text(doc, "answerKey")?)?;
    Doc::choices(format!("Question: {}\nAnswer:", text(doc, "question")?), choices, gold)
}

/// OpenBookQA: the bare `question_stem` (often a sentence to complete); `answerKey` left-stripped.
fn openbookqa(doc: &Map<String, Value>) -> Result<Doc> {
    let (choices, labels) = choices_and_labels(doc)?;
    let gold = index_of(&labels, text(doc, "answerKey")?.trim_start())?;
    Doc::choices(text(doc, "question_stem")?.to_string(), choices, gold)
}

/// PIQA: `Question: {goal}\nAnswer:`, the two solutions, gold = `label`.
fn piqa(doc: &Map<String, Value>) -> Result<Doc> {
    let choices = vec![text(doc, "sol1")?.to_string(), text(doc, "sol2")?.to_string()];
    Doc::choices(format!("Question: {}\nAnswer:", text(doc, "goal")?), choices, label(doc, "label")?)
}

/// HellaSwag as lm-eval's `process_docs`: `{activity_label}: {ctx_a} {Ctx_b}` and the endings,
/// each through its `preprocess` (WikiHow's bracketed artifacts removed). Not build-nanogpt's
/// rendering (`llmfs eval hellaswag`), which takes `ctx` as it is.
fn hellaswag(doc: &Map<String, Value>) -> Result<Doc> {
    let ctx = format!("{} {}", text(doc, "ctx_a")?, capitalize(text(doc, "ctx_b")?));
    let query = preprocess(&format!("{}: {ctx}", text(doc, "activity_label")?));
    let endings = strings(doc.get("endings"), "endings")?;
    Doc::choices(query, endings.iter().map(|e| preprocess(e)).collect(), label(doc, "label")?)
}

/// lm-eval's HellaSwag `preprocess`.
fn preprocess(text: &str) -> String {
    static BRACKETS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[.*?\]").expect("a valid pattern"));
    let text = text.trim_matches(super::is_python_space).replace(" [title]", ". ");
    BRACKETS.replace_all(&text, "").replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

/// `choices.text` and `choices.label` of an ARC / OpenBookQA record.
fn choices_and_labels(doc: &Map<String, Value>) -> Result<(Vec<String>, Vec<String>)> {
    let choices = doc.get("choices").and_then(Value::as_object).context("no `choices` object")?;
    Ok((strings(choices.get("text"), "choices.text")?, strings(choices.get("label"), "choices.label")?))
}

/// Python's `list.index`.
fn index_of(labels: &[String], key: &str) -> Result<usize> {
    labels.iter().position(|l| l == key).with_context(|| format!("the answer key {key:?} is not one of the labels {labels:?}"))
}

/// An integer label, also written as a string (CSV files, HellaSwag on the hub).
fn label(doc: &Map<String, Value>, key: &str) -> Result<usize> {
    match doc.get(key) {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize).with_context(|| format!("`{key}` is {n}, not a label index")),
        Some(Value::String(s)) => s.trim().parse().with_context(|| format!("`{key}` is {s:?}, not a label index")),
        Some(other) => bail!("`{key}` is {other}, not a label index"),
        None => bail!("no `{key}` field"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_preprocessing_is_lm_evals() {
        assert_eq!(preprocess(" How to x [title] Do it [step] now  ok [x\ny] "), "How to x. Do it now ok [x\ny]");
        assert_eq!(capitalize("tHE ÉCOLE"), "The école");
    }
}
