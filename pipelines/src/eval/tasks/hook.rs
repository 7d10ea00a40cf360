//! Benchmark tasks during training (`--eval-tasks`): every N optimizer steps and at each epoch's
//! end, the chosen tasks are scored on the model as it is, and their metrics go to `metrics.jsonl`
//! as events of the task's name (`arc_easy` … with `acc`, `acc_norm`, `n`; LAMBADA's
//! `perplexity`), where `llmfs monitor`, the plots and the trackers see them.

use std::sync::Mutex;

use anyhow::{Context, Result};
use gpt::Tokenizer;

use super::{BOOTSTRAP_ITERS, Task, aggregate_samples, evaluate};
use crate::data::records::Record;
use crate::train::steps::LanguageModelTraining;
use crate::runs::metrics::MetricEvent;
use crate::train::trainer::TrainHooks;

/// What a training job scores (`--eval-tasks`): the tasks with their documents, read once before
/// training, and how often (`None`: at each epoch's end only).
#[derive(Clone, Default)]
pub struct EvalTasks {
    pub tasks: Vec<(&'static Task, Vec<Record>)>,
    pub every: Option<usize>,
}

impl std::fmt::Debug for EvalTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tasks: Vec<String> = self.tasks.iter().map(|(t, r)| format!("{} ({} docs)", t.name, r.len())).collect();
        f.debug_struct("EvalTasks").field("tasks", &tasks).field("every", &self.every).finish()
    }
}

impl EvalTasks {
    /// `names` (comma-separated) read as `llmfs eval tasks` reads them, the first `limit` docs each.
    pub fn read(names: &str, every: Option<usize>, data_dir: Option<&std::path::Path>, limit: Option<usize>) -> Result<Self> {
        let options = gpt::io::HubOptions::from_env();
        let mut tasks = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let task = super::task(name)?;
            // The hook scores 0-shot without a description: not how MMLU is scored.
            anyhow::ensure!(task.fewshot_split.is_none(), "--eval-tasks {name}: MMLU is not scored during training (use `llmfs eval tasks`)");
            let (records, _) = super::read_task(task, data_dir, limit, &options)?;
            tasks.push((task, records));
        }
        anyhow::ensure!(!tasks.is_empty(), "--eval-tasks names no task");
        anyhow::ensure!(every != Some(0), "--eval-tasks-every must be at least 1");
        Ok(Self { tasks, every })
    }

    /// For run.json: each task and its number of docs.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "every": self.every, "tasks": self.tasks.iter().map(|(t, r)| serde_json::json!({ "task": t.name, "docs": r.len() })).collect::<Vec<_>>() })
    }

    /// The hook that scores them; no-op when there are no tasks.
    pub fn hook(&self, tokenizer: Tokenizer, batch_size: usize, print: bool) -> TaskHook {
        TaskHook::new(self.tasks.clone(), self.every, tokenizer, batch_size, print)
    }
}

/// The tasks and their documents, loaded once before training.
pub struct TaskHook {
    tasks: Vec<(&'static Task, Vec<Record>)>,
    every: Option<usize>,
    tokenizer: Tokenizer,
    batch_size: usize,
    print: bool,
    /// The step scored last: an epoch's end after a periodic score at the same step scores once.
    last_scored: Mutex<Option<usize>>,
}

impl TaskHook {
    pub fn new(tasks: Vec<(&'static Task, Vec<Record>)>, every: Option<usize>, tokenizer: Tokenizer, batch_size: usize, print: bool) -> Self {
        Self { tasks, every, tokenizer, batch_size, print, last_scored: Mutex::new(None) }
    }

    fn score(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        if self.tasks.is_empty() || self.last_scored.lock().is_ok_and(|last| *last == Some(step)) {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(self.tasks.len());
        for (task, records) in &self.tasks {
            let samples = evaluate(&model.model, &self.tokenizer, task, records, self.batch_size, |_| {})
                .with_context(|| format!("scoring {} at step {step}", task.name))?;
            let mut event = MetricEvent::new(step, epoch, task.name).with("n", samples.len());
            for aggregate in aggregate_samples(task, &samples, BOOTSTRAP_ITERS) {
                match aggregate.metric {
                    "perplexity" => event.perplexity = Some(aggregate.value),
                    metric => event = event.with(metric, aggregate.value),
                }
            }
            // The task's headline number: acc_norm where lm-eval reports one, else acc.
            event.accuracy = event.extra.get("acc_norm").or_else(|| event.extra.get("acc")).and_then(|v| v.as_f64());
            if self.print {
                let values: Vec<String> =
                    event.extra.iter().filter(|(k, _)| *k != "n").map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN))).collect();
                let perplexity = event.perplexity.map(|p| format!(" perplexity {p:.2}")).unwrap_or_default();
                eprintln!("epoch {epoch} step {step} {} {}{perplexity} (n={})", task.name, values.join(" "), samples.len());
            }
            events.push(event);
        }
        if let Ok(mut last) = self.last_scored.lock() {
            *last = Some(step);
        }
        Ok(events)
    }
}

impl TrainHooks<LanguageModelTraining> for TaskHook {
    fn epoch_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        self.score(model, epoch, step)
    }

    fn wants_step(&self, step: usize) -> bool {
        self.every.is_some_and(|every| step.is_multiple_of(every))
    }

    fn step_end(&self, model: &LanguageModelTraining, epoch: usize, step: usize) -> Result<Vec<MetricEvent>> {
        self.score(model, epoch, step)
    }
}
