//! lm-eval's few-shot context (`ContextSampler.get_context` with the `first_n` sampler, as MMLU
//! uses it): the task's description, then the first `k` docs of its few-shot split, each its
//! prompt, the target delimiter and its gold choice, every example followed by the few-shot
//! delimiter; the doc's own prompt comes after. With `k` = 0 only the description remains.

use anyhow::{Context, Result, ensure};

use super::{FEWSHOT_DELIMITER, TARGET_DELIMITER, Task};
use crate::data::records::Record;

/// What goes before every doc's prompt: the description and the first `k` of `examples`.
pub fn fewshot_prefix(task: &Task, examples: &[Record], k: usize) -> Result<String> {
    ensure!(
        k <= examples.len(),
        "{}: {k} few-shot examples asked for, the {} split has {}",
        task.name,
        task.fewshot_split.unwrap_or("few-shot"),
        examples.len()
    );
    let mut prefix = task.description.to_string();
    for record in &examples[..k] {
        let doc = task.doc(record)?;
        let (context, _) = doc.requests.get(doc.gold).with_context(|| format!("{}: a few-shot example with no request", record.location()))?;
        let target = doc.choices.get(doc.gold).with_context(|| format!("{}: a few-shot example with no gold choice", record.location()))?;
        prefix.push_str(&format!("{context}{TARGET_DELIMITER}{target}{FEWSHOT_DELIMITER}"));
    }
    Ok(prefix)
}
