//! The results file in lm-eval's schema (what `lm_eval --output_path` writes, less the samples),
//! so tooling that reads lm-eval results reads ours: `results.{task}` holds `"{metric},none"` and
//! `"{metric}_stderr,none"` (a number, or "N/A" for one doc) with `alias`; beside it `configs`,
//! `versions`, `n-shot`, `higher_is_better`, `n-samples` and the run's `config`.

use serde_json::{Map, Value, json};

use super::{Aggregate, BOOTSTRAP_ITERS, FEWSHOT_DELIMITER, TARGET_DELIMITER, Task};

/// How the run was made, for the results' `config`.
pub struct RunInfo {
    pub model: String,
    pub batch_size: usize,
    pub device: String,
    pub limit: Option<usize>,
    pub seconds: f64,
}

/// One evaluated task: its docs in the data (`original`), those scored and the aggregates.
pub struct TaskResult<'a> {
    pub task: &'a Task,
    pub original: usize,
    pub effective: usize,
    pub aggregates: Vec<Aggregate>,
}

/// The results document.
pub fn results_json(tasks: &[TaskResult], run: &RunInfo) -> Value {
    let mut results = Map::new();
    let mut configs = Map::new();
    let (mut versions, mut n_shot, mut higher, mut samples, mut subtasks) = (Map::new(), Map::new(), Map::new(), Map::new(), Map::new());
    for result in tasks {
        let task = result.task;
        let mut entry = Map::new();
        entry.insert("name".into(), json!(task.name));
        entry.insert("alias".into(), json!(task.name));
        entry.insert("sample_len".into(), json!(result.effective));
        for aggregate in &result.aggregates {
            entry.insert(format!("{},none", aggregate.metric), json!(aggregate.value));
            entry.insert(format!("{}_stderr,none", aggregate.metric), aggregate.stderr.map_or(json!("N/A"), |s| json!(s)));
        }
        results.insert(task.name.into(), Value::Object(entry));
        configs.insert(task.name.into(), task_config(task));
        versions.insert(task.name.into(), json!(task.version));
        n_shot.insert(task.name.into(), json!(0));
        higher.insert(task.name.into(), task.metrics.iter().map(|&m| (m.to_string(), json!(m != "perplexity"))).collect::<Map<_, _>>().into());
        samples.insert(task.name.into(), json!({ "original": result.original, "effective": result.effective }));
        subtasks.insert(task.name.into(), json!([]));
    }
    json!({
        "results": results,
        "group_subtasks": subtasks,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": samples,
        "config": {
            "model": "llmfs",
            "model_args": format!("pretrained={}", run.model),
            "batch_size": run.batch_size,
            "device": run.device,
            "limit": run.limit,
            "bootstrap_iters": BOOTSTRAP_ITERS,
            "num_fewshot": 0,
        },
        "llmfs_version": env!("CARGO_PKG_VERSION"),
        "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default(),
        "total_evaluation_time_seconds": format!("{}", run.seconds),
    })
}

/// A task's entry in `configs`: its lm-eval YAML's fields.
fn task_config(task: &Task) -> Value {
    let mut config = Map::new();
    config.insert("task".into(), json!(task.name));
    config.insert("dataset_path".into(), json!(task.dataset));
    config.insert("dataset_name".into(), json!(task.config));
    let split_key = if task.split == "test" { "test_split" } else { "validation_split" };
    config.insert(split_key.into(), json!(task.split));
    for (key, template) in task.templates {
        if !template.is_empty() {
            config.insert(key.into(), json!(template));
        }
    }
    config.insert("description".into(), json!(""));
    config.insert("target_delimiter".into(), json!(TARGET_DELIMITER));
    config.insert("fewshot_delimiter".into(), json!(FEWSHOT_DELIMITER));
    config.insert("num_fewshot".into(), json!(0));
    let metrics: Vec<Value> = task
        .metrics
        .iter()
        .map(|&m| json!({ "metric": m, "aggregation": if m == "perplexity" { "perplexity" } else { "mean" }, "higher_is_better": m != "perplexity" }))
        .collect();
    config.insert("metric_list".into(), json!(metrics));
    let output = match task.output {
        super::Output::Loglikelihood => "loglikelihood",
        _ => "multiple_choice",
    };
    config.insert("output_type".into(), json!(output));
    config.insert("metadata".into(), json!({ "version": task.version }));
    Value::Object(config)
}
