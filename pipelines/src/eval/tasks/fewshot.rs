//! lm-eval's few-shot context (`ConfigurableTask.fewshot_context` and its `ContextSampler`): the
//! task's description, then `k` examples, each its prompt, the target delimiter, its gold answer
//! and the few-shot delimiter; the doc's own prompt comes after. With `k` = 0 only the
//! description remains.
//!
//! The examples come from the task's few-shot docs ([`Task::examples_split`]). MMLU takes the
//! first `k` (lm-eval's `first_n` sampler); the other tasks draw `k` per doc with one
//! `random.Random(1234)` per task (`fewshot_random_seed`), so doc `i`'s examples depend on the
//! draws for the docs before it, as in lm-eval. Where the few-shot split is the evaluated one as
//! lm-eval compares them (`fewshot_split == test_split`, true for tasks with neither), it draws
//! `k + 1` and drops the doc itself.

use anyhow::{Context, Result, ensure};

use super::python_random::PythonRandom;
use super::{FEWSHOT_DELIMITER, Output, TARGET_DELIMITER, Task};
use crate::data::records::Record;

/// lm-eval's default `fewshot_random_seed`.
pub const FEWSHOT_SEED: u32 = 1234;

/// How a task picks its examples (lm-eval's `fewshot_config.sampler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// `first_n`: the first `k` docs of the few-shot split, the same for every doc (MMLU).
    FirstN,
    /// `default`: `k` docs drawn at random for each doc.
    Random,
}

/// The few-shot context of one task's docs, built doc by doc in order.
pub struct Fewshot<'t> {
    task: &'t Task,
    examples: Vec<Record>,
    k: usize,
    random: PythonRandom,
}

impl<'t> Fewshot<'t> {
    /// `k` examples from `examples` (the task's [`Task::examples_split`]) before every doc.
    pub fn new(task: &'t Task, examples: Vec<Record>, k: usize) -> Result<Self> {
        let drawn = match task.sampler {
            Sampler::Random if k > 0 && task.excludes_eval_doc() => k + 1,
            _ => k,
        };
        ensure!(
            drawn <= examples.len(),
            "{}: {k} few-shot examples asked for{}, the {} split has {}",
            task.name,
            if drawn > k { " (lm-eval draws one more, to leave the doc itself out)" } else { "" },
            task.examples_split(),
            examples.len()
        );
        Ok(Self { task, examples, k, random: PythonRandom::new(FEWSHOT_SEED) })
    }

    /// No examples: the description alone (most tasks have none).
    pub fn zero_shot(task: &'t Task) -> Self {
        Self { task, examples: Vec::new(), k: 0, random: PythonRandom::new(FEWSHOT_SEED) }
    }

    /// What goes before `doc`'s prompt: the description and its examples.
    pub fn context(&mut self, doc: &Record) -> Result<String> {
        let mut context = self.task.description.to_string();
        for example in self.draw(doc)? {
            context.push_str(&example_text(self.task, &self.examples[example])?);
        }
        Ok(context)
    }

    /// The indices of `doc`'s examples, as lm-eval's sampler picks them.
    fn draw(&mut self, doc: &Record) -> Result<Vec<usize>> {
        if self.k == 0 {
            return Ok(Vec::new());
        }
        let exclude = self.task.excludes_eval_doc();
        match self.task.sampler {
            Sampler::FirstN => {
                let pool = self.others(doc, exclude)?;
                ensure!(pool.len() >= self.k, "{}: fewer than {} few-shot examples besides the doc itself", self.task.name, self.k);
                Ok(pool[..self.k].to_vec())
            }
            Sampler::Random if !exclude => Ok(self.random.sample(self.examples.len(), self.k)),
            Sampler::Random => {
                // Only the drawn examples are compared with the doc: the pool can be a whole train split.
                let mut picks = Vec::with_capacity(self.k);
                for i in self.random.sample(self.examples.len(), self.k + 1) {
                    if self.examples[i].object()? != doc.object()? {
                        picks.push(i);
                    }
                }
                picks.truncate(self.k);
                if picks.len() < self.k {
                    // The doc was drawn more than once (duplicate rows): lm-eval draws again from the rest.
                    let pool = self.others(doc, true)?;
                    ensure!(pool.len() >= self.k, "{}: fewer than {} few-shot examples besides the doc itself", self.task.name, self.k);
                    picks = self.random.sample(pool.len(), self.k).into_iter().map(|i| pool[i]).collect();
                }
                Ok(picks)
            }
        }
    }

    /// The examples that are not `doc` (all of them without `exclude`), in order.
    fn others(&self, doc: &Record, exclude: bool) -> Result<Vec<usize>> {
        let mut pool = Vec::with_capacity(self.examples.len());
        for (i, example) in self.examples.iter().enumerate() {
            if !(exclude && example.object()? == doc.object()?) {
                pool.push(i);
            }
        }
        Ok(pool)
    }
}

/// One example as lm-eval's `build_qa_turn` writes it: the prompt of the gold request, the
/// target delimiter, the answer, the few-shot delimiter. The answer is the gold choice (multiple
/// choice), the text after the blank (Winogrande: an empty one leaves the prompt alone, as there)
/// or the continuation with its own leading space (LAMBADA: so two spaces precede the word).
fn example_text(task: &Task, record: &Record) -> Result<String> {
    let doc = task.doc(record)?;
    let (context, continuation) = doc.requests.get(doc.gold).with_context(|| format!("{}: a few-shot example with no request", record.location()))?;
    let answer = match task.output {
        Output::MultipleChoice => doc.choices.get(doc.gold).with_context(|| format!("{}: a few-shot example with no gold choice", record.location()))?,
        Output::MultipleInput => continuation.strip_prefix(TARGET_DELIMITER).unwrap_or(continuation),
        Output::Loglikelihood => continuation,
    };
    if answer.is_empty() && task.output != Output::MultipleChoice {
        return Ok(context.clone());
    }
    Ok(format!("{context}{TARGET_DELIMITER}{answer}{FEWSHOT_DELIMITER}"))
}
