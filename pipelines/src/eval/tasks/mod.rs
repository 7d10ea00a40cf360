//! lm-evaluation-harness's loglikelihood tasks (`llmfs eval tasks`): ARC, OpenBookQA, PIQA,
//! Winogrande, LAMBADA, HellaSwag and MMLU's subjects, scored as lm-eval 0.4 scores them.
//!
//! A task turns a data set record into a [`Doc`]: lm-eval's requests, `(context, continuation)`
//! strings (its `doc_to_text` / `doc_to_choice` / `doc_to_target` templates joined by the target
//! delimiter " "), and the gold answer. Each request is tokenized as lm-eval's `_encode_pair` does
//! ([`encode_pair`]), a doc's requests that share a context are scored together through the KV
//! cache ([`score_requests`]), and the per-doc metrics (acc, acc_norm, perplexity) are aggregated
//! with lm-eval's standard errors ([`aggregate`]).

mod aggregate;
mod fewshot;
pub mod hook;
mod lambada;
pub mod mmlu;
mod multiple_choice;
mod python_random;
mod results;
mod winogrande;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use gpt::Tokenizer;
use gpt::burn::module::Module;
use gpt::models::CausalLm;
use serde::Serialize;
use serde_json::{Map, Value};

use super::loglikelihood::{Loglikelihood, Request, score_requests};
use crate::data::records::Record;
use crate::data::source::DataSource;

pub use aggregate::{Aggregate, BOOTSTRAP_ITERS, aggregate, group_aggregate};
pub use fewshot::{FEWSHOT_SEED, Fewshot, Sampler};
pub use results::{GroupResult, RunInfo, TaskResult, results_json};

/// lm-eval's `target_delimiter`: what joins a context and a continuation.
pub const TARGET_DELIMITER: &str = " ";
/// lm-eval's `fewshot_delimiter`: what follows each few-shot example.
pub const FEWSHOT_DELIMITER: &str = "\n\n";

/// How a task's docs are scored (lm-eval's `output_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One request per choice, same context: acc = the most likely choice is gold, acc_norm = the
    /// same after dividing each log-likelihood by its choice's length in characters.
    MultipleChoice,
    /// One request per context (Winogrande's partial scoring: the options fill the blank in the
    /// context, the rest of the sentence is the shared continuation): acc.
    MultipleInput,
    /// One request: acc = greedy decoding gives the continuation, perplexity over the docs.
    Loglikelihood,
}

/// One lm-eval task: where its data is and how a record becomes a [`Doc`].
pub struct Task {
    pub name: &'static str,
    /// The Hugging Face data set (`dataset_path`) and its config (`dataset_name`).
    pub dataset: &'static str,
    pub config: Option<&'static str>,
    /// The split lm-eval evaluates (its `test_split`, else `validation_split`).
    pub split: &'static str,
    pub output: Output,
    /// Metric names, in lm-eval's `metric_list` order.
    pub metrics: &'static [&'static str],
    /// lm-eval's `doc_to_text` / `doc_to_target` / `doc_to_choice`, for the results' `configs`.
    pub templates: [(&'static str, &'static str); 3],
    pub version: f64,
    /// lm-eval's `fewshot_split` (MMLU's `dev`), if the task names one.
    pub fewshot_split: Option<&'static str>,
    /// lm-eval's `training_split`, if the task has one: its few-shot examples otherwise.
    pub training_split: Option<&'static str>,
    /// How the examples are picked.
    pub sampler: Sampler,
    /// lm-eval's `description`: the text before the examples and the prompt ("" for most tasks).
    pub description: &'static str,
    render: fn(&Map<String, Value>) -> Result<Doc>,
}

/// The tasks `eval tasks` knows, in the order of lm-eval's task list.
pub const TASKS: [&Task; 7] = [
    &multiple_choice::ARC_EASY,
    &multiple_choice::ARC_CHALLENGE,
    &multiple_choice::OPENBOOKQA,
    &multiple_choice::PIQA,
    &winogrande::WINOGRANDE,
    &lambada::LAMBADA_OPENAI,
    &multiple_choice::HELLASWAG,
];

/// The task named `name` (one of [`TASKS`] or an MMLU subject, `mmlu_<subject>`).
pub fn task(name: &str) -> Result<&'static Task> {
    TASKS.iter().copied().chain(mmlu::subjects(None)).find(|t| t.name == name).with_context(|| {
        format!(
            "unknown task `{name}` (known: {}, and mmlu_<subject>; `eval tasks --tasks` also takes mmlu and its groups)",
            TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The tasks a name on the command line stands for: `mmlu` is its 57 subjects, `mmlu_stem`,
/// `mmlu_humanities`, `mmlu_social_sciences` and `mmlu_other` theirs, any other name one task.
pub fn tasks_named(name: &str) -> Result<Vec<&'static Task>> {
    if name == "mmlu" {
        return Ok(mmlu::subjects(None).collect());
    }
    if let Some(&category) = mmlu::CATEGORIES.iter().find(|c| c.group() == name) {
        return Ok(mmlu::subjects(Some(category)).collect());
    }
    Ok(vec![task(name)?])
}

impl Task {
    /// The data source of a split of the task on the hub: `hf:dataset[:config]@split`.
    pub fn hub_source(&self, split: &str) -> String {
        match self.config {
            Some(config) => format!("hf:{}:{config}@{split}", self.dataset),
            None => format!("hf:{}@{split}", self.dataset),
        }
    }

    /// The split few-shot examples come from: lm-eval's `fewshot_docs()`, the task's
    /// `fewshot_split`, else its training split, else the evaluated one (none of these tasks has
    /// a validation split without a training split).
    pub fn examples_split(&self) -> &'static str {
        self.fewshot_split.or(self.training_split).unwrap_or(self.split)
    }

    /// Whether lm-eval leaves the doc itself out of its examples: when `fewshot_split` equals
    /// `test_split` as configured (both unset for tasks scored on their validation split).
    pub fn excludes_eval_doc(&self) -> bool {
        let test_split = (self.split == "test").then_some("test");
        self.fewshot_split == test_split
    }

    /// lm-eval's doc for `record`; errors name the record.
    pub fn doc(&self, record: &Record) -> Result<Doc> {
        (self.render)(record.object()?).with_context(|| format!("{}: not a {} record", record.location(), self.name))
    }
}

/// A record as lm-eval sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Doc {
    /// lm-eval's `arguments`: `(context, continuation)`, one per choice (or context).
    pub requests: Vec<(String, String)>,
    /// The gold request (0 for a single-request task).
    pub gold: usize,
    /// The choices without the delimiter, whose lengths normalise acc_norm (multiple choice only).
    pub choices: Vec<String>,
}

impl Doc {
    /// Multiple choice: `(text, " " + choice)` for each choice.
    fn choices(text: String, choices: Vec<String>, gold: usize) -> Result<Self> {
        ensure!(gold < choices.len(), "the gold answer {gold} is not one of the {} choices", choices.len());
        let requests = choices.iter().map(|c| (text.clone(), format!("{TARGET_DELIMITER}{c}"))).collect();
        Ok(Self { requests, gold, choices })
    }
}

/// One scored doc: what lm-eval logs as a sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub doc_id: usize,
    pub doc: Doc,
    /// One per request.
    pub resps: Vec<Loglikelihood>,
    /// The doc's value of each of the task's metrics.
    pub metrics: BTreeMap<&'static str, f64>,
}

/// Tokenizes a request as lm-eval's `_encode_pair`: white space ending the context moves to the
/// continuation, `context + continuation` is encoded whole and split where the context's own
/// encoding ends (so a word's leading space stays in its token). Both with the tokenizer's
/// defaults, as lm-eval's `HFLM.tok_encode` (a Llama 3 tokenizer adds `<|begin_of_text|>`).
/// An empty context is lm-eval's `prefix_token_id`, the BOS token (else end of text), before the
/// continuation encoded without special tokens (the continuation's first token when it is that token).
pub fn encode_pair(tokenizer: &Tokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    if context.is_empty() {
        let mut continuation_ids = tokenizer.try_encode_ordinary(continuation)?;
        ensure!(!continuation_ids.is_empty(), "the continuation {continuation:?} has no tokens");
        let start = tokenizer.start_id();
        return Ok(if continuation_ids[0] == start {
            let rest = continuation_ids.split_off(1);
            (continuation_ids, rest)
        } else {
            (vec![start], continuation_ids)
        });
    }
    let trimmed = context.trim_end_matches(is_python_space);
    let continuation = format!("{}{continuation}", &context[trimmed.len()..]);
    let whole = tokenizer.try_encode(&format!("{trimmed}{continuation}"))?;
    let context_ids = tokenizer.try_encode(trimmed)?;
    let continuation_ids = whole.get(context_ids.len()..).unwrap_or_default().to_vec();
    ensure!(!continuation_ids.is_empty(), "the continuation {continuation:?} has no tokens of its own after {:?}", crate::data::excerpt(trimmed, 60));
    Ok((context_ids, continuation_ids))
}

/// Python's `str.isspace`, which `rstrip()` strips: Unicode white space and the separators U+001C–U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Left-truncates a request to the model's window as lm-eval does: a row that does not fit keeps
/// its last `window + 1` tokens (the continuation whole, the context's end).
fn fit(context: &[u32], continuation: &[u32], window: usize) -> Result<Vec<u32>> {
    ensure!(continuation.len() <= window, "a continuation of {} tokens is longer than the model's context of {window}", continuation.len());
    let keep = (window + 1 - continuation.len()).min(context.len());
    Ok(context[context.len() - keep..].to_vec())
}

/// A task's documents: its split of `data_dir/<task>/` (split files) when given, else of its
/// Hugging Face data set; the first `limit`. Returns them and how many the split has.
pub fn read_task(task: &Task, data_dir: Option<&std::path::Path>, limit: Option<usize>, options: &gpt::io::HubOptions) -> Result<(Vec<Record>, usize)> {
    let mut records = read_split(task, task.split, data_dir, options)?;
    let original = records.len();
    if let Some(limit) = limit {
        records.truncate(limit);
    }
    Ok((records, original))
}

/// The docs few-shot examples come from ([`Task::examples_split`]: `dev` for MMLU, `train` for
/// most), from where [`read_task`] reads.
pub fn read_fewshot(task: &Task, data_dir: Option<&std::path::Path>, options: &gpt::io::HubOptions) -> Result<Vec<Record>> {
    read_split(task, task.examples_split(), data_dir, options)
}

/// One split of the task: `data_dir/<task>/<split>.*`, or the split of its Hugging Face data set.
fn read_split(task: &Task, split: &str, data_dir: Option<&std::path::Path>, options: &gpt::io::HubOptions) -> Result<Vec<Record>> {
    let source = match data_dir {
        Some(dir) => {
            let dir = dir.join(task.name);
            ensure!(dir.is_dir(), "no directory {} for the task {} (expected its split files, e.g. {split}.jsonl)", dir.display(), task.name);
            DataSource::open(&dir.to_string_lossy(), options)?
        }
        None => DataSource::open(&task.hub_source(split), options)?,
    };
    let records = source.read(split, None).with_context(|| format!("reading the {split} split of {} for {}", source.name, task.name))?;
    ensure!(!records.is_empty(), "{} ({split}) holds no records for {}", source.name, task.name);
    Ok(records)
}

/// Scores `records` on `task` 0-shot (the task's description, if any, before each prompt):
/// [`evaluate_fewshot`] with no examples.
pub fn evaluate<M: CausalLm + Module>(
    model: &M,
    tokenizer: &Tokenizer,
    task: &Task,
    records: &[Record],
    batch_size: usize,
    progress: impl FnMut(usize),
) -> Result<Vec<Sample>> {
    evaluate_fewshot(model, tokenizer, task, &mut Fewshot::zero_shot(task), records, batch_size, progress)
}

/// Scores `records` on `task`, each doc's [`Fewshot::context`] (the description and few-shot
/// examples) before its prompt, `batch_size` docs per forward pass (longest first); `progress`
/// is called with the docs done. Returns one [`Sample`] per record, in order.
pub fn evaluate_fewshot<M: CausalLm + Module>(
    model: &M,
    tokenizer: &Tokenizer,
    task: &Task,
    fewshot: &mut Fewshot,
    records: &[Record],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Sample>> {
    ensure!(batch_size > 0, "the batch size must be at least 1");
    let model = model.valid();
    let window = model.context_length();
    let mut docs = Vec::with_capacity(records.len());
    // The scoring units: a request (one context, its continuations) and, per continuation, (doc, request).
    let mut units: Vec<(usize, Request, Vec<usize>)> = Vec::new();
    for (d, record) in records.iter().enumerate() {
        let mut doc = task.doc(record)?;
        let prefix = fewshot.context(record)?;
        for (context, _) in &mut doc.requests {
            context.insert_str(0, &prefix);
        }
        let first_unit = units.len();
        for (r, (context, continuation)) in doc.requests.iter().enumerate() {
            let (context, continuation) =
                encode_pair(tokenizer, context, continuation).with_context(|| format!("{}: request {r}", record.location()))?;
            let context = fit(&context, &continuation, window).with_context(|| format!("{}: request {r}", record.location()))?;
            // A doc's requests with the same context share one scoring unit (one pass of the context).
            match units[first_unit..].iter_mut().find(|(_, u, _)| u.context == context) {
                Some((_, unit, index)) => {
                    unit.continuations.push(continuation);
                    index.push(r);
                }
                None => units.push((d, Request { context, continuations: vec![continuation] }, vec![r])),
            }
        }
        docs.push(doc);
    }

    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&u| std::cmp::Reverse(units[u].1.width()));
    let mut resps: Vec<Vec<Option<Loglikelihood>>> = docs.iter().map(|d| vec![None; d.requests.len()]).collect();
    let mut remaining: Vec<usize> = docs.iter().map(|d| d.requests.len()).collect();
    let mut done = 0;
    let requests: Vec<&Request> = units.iter().map(|(_, request, _)| request).collect();
    for chunk in batches(&requests, &order, batch_size, window) {
        let batch: Vec<&Request> = chunk.iter().map(|&u| requests[u]).collect();
        for (&u, scores) in chunk.iter().zip(score_requests(&model, &batch)?) {
            let (d, _, index) = &units[u];
            for (&r, score) in index.iter().zip(scores) {
                resps[*d][r] = Some(score);
                remaining[*d] -= 1;
                done += usize::from(remaining[*d] == 0);
            }
        }
        progress(done);
    }

    let mut samples = Vec::with_capacity(docs.len());
    for (doc_id, (doc, resps)) in docs.into_iter().zip(resps).enumerate() {
        let resps: Vec<Loglikelihood> = resps.into_iter().collect::<Option<_>>().context("every request is scored")?;
        let metrics = doc_metrics(task, &doc, &resps)?;
        samples.push(Sample { doc_id, doc, resps, metrics });
    }
    Ok(samples)
}

/// Cuts `order` into batches of at most `batch_size` requests whose rows fit the window together:
/// a batch runs its longest context and then its longest continuation, so a left-truncated
/// context and another request's longer continuation go to different batches.
fn batches(requests: &[&Request], order: &[usize], batch_size: usize, window: usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut context, mut end) = (0, 0);
    for &u in order {
        let request = requests[u];
        let (c, e) = (request.context.len(), request.continuations.iter().map(|c| c.len() - 1).max().unwrap_or(0));
        match batches.last_mut() {
            Some(batch) if batch.len() < batch_size && context.max(c) + end.max(e) <= window => {
                batch.push(u);
                (context, end) = (context.max(c), end.max(e));
            }
            _ => {
                batches.push(vec![u]);
                (context, end) = (c, e);
            }
        }
    }
    batches
}

/// The task's metrics over `samples`, aggregated as lm-eval does.
pub fn aggregate_samples(task: &Task, samples: &[Sample], bootstrap_iters: usize) -> Vec<Aggregate> {
    task.metrics
        .iter()
        .map(|&metric| {
            let values: Vec<f64> = samples.iter().filter_map(|s| s.metrics.get(metric).copied()).collect();
            aggregate(metric, &values, bootstrap_iters)
        })
        .collect()
}

/// lm-eval's `process_results`: a doc's value of each of the task's metrics.
fn doc_metrics(task: &Task, doc: &Doc, resps: &[Loglikelihood]) -> Result<BTreeMap<&'static str, f64>> {
    let lls: Vec<f64> = resps.iter().map(|r| r.logprob).collect();
    let hit = |pred: usize| if pred == doc.gold { 1.0 } else { 0.0 };
    let mut metrics = BTreeMap::new();
    for &metric in task.metrics {
        let value = match (task.output, metric) {
            (Output::MultipleChoice | Output::MultipleInput, "acc") => hit(argmax(&lls)),
            (Output::MultipleChoice, "acc_norm") => {
                // Python's len(): characters, not bytes (lm-eval's acc_bytes divides by bytes).
                let normalised: Vec<f64> = lls.iter().zip(&doc.choices).map(|(ll, c)| ll / c.chars().count() as f64).collect();
                hit(argmax(&normalised))
            }
            (Output::Loglikelihood, "acc") => f64::from(u8::from(resps.first().context("a loglikelihood doc has one request")?.greedy)),
            (Output::Loglikelihood, "perplexity") => lls[0],
            (output, metric) => bail!("task {}: no metric {metric} for {output:?}", task.name),
        };
        metrics.insert(metric, value);
    }
    Ok(metrics)
}

/// `np.argmax`: the first of the largest (a NaN wins, as there).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if values[best].is_nan() {
            break;
        }
        if v > values[best] || v.is_nan() {
            best = i;
        }
    }
    best
}

/// A string field of a record.
fn text<'a>(doc: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match doc.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => bail!("`{key}` is not a string: {other}"),
        None => bail!("no `{key}` field"),
    }
}

/// A list-of-strings field (`choices.text`), also inside an object (`choices` → `text`).
fn strings(value: Option<&Value>, what: &str) -> Result<Vec<String>> {
    let Some(Value::Array(items)) = value else {
        bail!("`{what}` is not a list of strings");
    };
    items.iter().map(|v| v.as_str().map(str::to_string).with_context(|| format!("`{what}` holds {v}, not a string"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equals_and_nan_as_numpy() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0, f64::NAN, 5.0]), 1);
        assert_eq!(argmax(&[f64::NAN, 5.0]), 0);
    }

    #[test]
    fn fit_keeps_the_last_window_plus_one_tokens() {
        let context: Vec<u32> = (0..10).collect();
        assert_eq!(fit(&context, &[20, 21], 12).unwrap(), context);
        assert_eq!(fit(&context, &[20, 21], 8).unwrap(), vec![3, 4, 5, 6, 7, 8, 9]);
        assert!(fit(&context, &[1; 9], 8).is_err());
    }

    #[test]
    fn trailing_white_space_moves_to_the_continuation() {
        let tokenizer = Tokenizer::gpt2();
        let (context, continuation) = encode_pair(&tokenizer, "Predators eat ", " bunnies").unwrap();
        assert_eq!(context, tokenizer.encode("Predators eat"));
        assert_eq!(tokenizer.decode(&continuation).unwrap(), "  bunnies");
        let (context, continuation) = encode_pair(&tokenizer, "Question: 2+2?\nAnswer:", " 4").unwrap();
        assert_eq!(context, tokenizer.encode("Question: 2+2?\nAnswer:"));
        assert_eq!(continuation, tokenizer.encode(" 4"));
    }

    #[test]
    fn a_batch_fits_the_window_together() {
        let request = |context: usize, continuation: usize| Request { context: vec![1; context], continuations: vec![vec![2; continuation]] };
        // Each fits 8 positions alone; 7 + 1 and 4 + 4 fit, 7 + 4 does not.
        let requests = [request(7, 2), request(4, 5), request(4, 2), request(2, 2)];
        let refs: Vec<&Request> = requests.iter().collect();
        assert_eq!(batches(&refs, &[0, 1, 2, 3], 3, 8), vec![vec![0], vec![1, 2, 3]]);
        assert_eq!(batches(&refs, &[0, 2, 3, 1], 2, 8), vec![vec![0, 2], vec![3, 1]]);
    }

    #[test]
    fn an_empty_context_is_the_start_token() {
        let tokenizer = Tokenizer::gpt2();
        let (context, continuation) = encode_pair(&tokenizer, "", " Goodbye").unwrap();
        assert_eq!((context, continuation), (vec![50256], tokenizer.encode(" Goodbye")));
    }
}
