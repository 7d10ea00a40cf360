//! The results file in lm-eval's schema (what `lm_eval --output_path` writes, less the samples),
//! so tooling that reads lm-eval results reads ours: `results.{task}` holds `"{metric},none"` and
//! `"{metric}_stderr,none"` (a number, or "N/A" for one doc) with `alias`; beside it `configs`,
//! `versions`, `n-shot`, `higher_is_better`, `n-samples` and the run's `config`. Groups (MMLU's)
//! have their entry in `results` and in `groups`, and their subtasks in `group_subtasks`.

use serde_json::{Map, Value, json};

use super::{Aggregate, BOOTSTRAP_ITERS, FEWSHOT_DELIMITER, Sampler, TARGET_DELIMITER, Task, group_aggregate};

/// How the run was made, for the results' `config`.
pub struct RunInfo {
    pub model: String,
    pub batch_size: usize,
    pub device: String,
    pub limit: Option<usize>,
    /// `--num-fewshot` as given (`None`: each task's default).
    pub num_fewshot: Option<usize>,
    pub seconds: f64,
}

/// One evaluated task: its docs in the data (`original`), those scored and the aggregates.
pub struct TaskResult<'a> {
    pub task: &'a Task,
    pub original: usize,
    pub effective: usize,
    /// Few-shot examples before each prompt.
    pub num_fewshot: usize,
    pub aggregates: Vec<Aggregate>,
}

/// A group of evaluated tasks (an MMLU category, or `mmlu`): its aggregates over its tasks.
pub struct GroupResult {
    pub name: &'static str,
    /// lm-eval's `group_subtasks` entry.
    pub subtasks: Vec<&'static str>,
    pub docs: usize,
    pub aggregates: Vec<Aggregate>,
}

impl GroupResult {
    /// `name`'s aggregate of each metric over the `members` among `results` (weighted by docs,
    /// pooled stderr); `None` when none of them was evaluated.
    pub fn of(name: &'static str, subtasks: Vec<&'static str>, members: &[&Task], results: &[TaskResult]) -> Option<Self> {
        let scored: Vec<&TaskResult> = results.iter().filter(|r| members.iter().any(|m| m.name == r.task.name)).collect();
        let first = scored.first()?;
        let aggregates = first
            .aggregates
            .iter()
            .map(|a| {
                let values: Vec<(f64, Option<f64>, usize)> = scored
                    .iter()
                    .filter_map(|r| r.aggregates.iter().find(|b| b.metric == a.metric).map(|b| (b.value, b.stderr, r.effective)))
                    .collect();
                group_aggregate(a.metric, &values)
            })
            .collect();
        Some(Self { name, subtasks, docs: scored.iter().map(|r| r.effective).sum(), aggregates })
    }
}

/// The results document.
pub fn results_json(tasks: &[TaskResult], groups: &[GroupResult], run: &RunInfo) -> Value {
    let mut results = Map::new();
    let mut group_entries = Map::new();
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
        configs.insert(task.name.into(), task_config(task, result.num_fewshot));
        versions.insert(task.name.into(), json!(task.version));
        n_shot.insert(task.name.into(), json!(result.num_fewshot));
        higher.insert(task.name.into(), task.metrics.iter().map(|&m| (m.to_string(), json!(m != "perplexity"))).collect::<Map<_, _>>().into());
        samples.insert(task.name.into(), json!({ "original": result.original, "effective": result.effective }));
        subtasks.insert(task.name.into(), json!([]));
    }
    for group in groups {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(group.name));
        entry.insert("alias".into(), json!(group.name));
        entry.insert("sample_len".into(), json!(group.docs));
        for aggregate in &group.aggregates {
            entry.insert(format!("{},none", aggregate.metric), json!(aggregate.value));
            entry.insert(format!("{}_stderr,none", aggregate.metric), aggregate.stderr.map_or(json!("N/A"), |s| json!(s)));
        }
        let counts: Map<String, Value> = group.aggregates.iter().map(|a| (format!("{},none", a.metric), json!(group.docs))).collect();
        entry.insert("sample_count".into(), Value::Object(counts));
        results.insert(group.name.into(), Value::Object(entry.clone()));
        group_entries.insert(group.name.into(), Value::Object(entry));
        subtasks.insert(group.name.into(), json!(group.subtasks));
        versions.insert(group.name.into(), json!(2.0));
    }
    let mut document = json!({
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
            "num_fewshot": run.num_fewshot,
            "fewshot_seed": super::FEWSHOT_SEED,
        },
        "llmfs_version": env!("CARGO_PKG_VERSION"),
        "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default(),
        "total_evaluation_time_seconds": format!("{}", run.seconds),
    });
    // lm-eval writes `groups` only when a group was evaluated.
    if !group_entries.is_empty() {
        document["groups"] = Value::Object(group_entries);
    }
    document
}

/// A task's entry in `configs`: its lm-eval YAML's fields.
fn task_config(task: &Task, num_fewshot: usize) -> Value {
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
    if let Some(split) = task.training_split {
        config.insert("training_split".into(), json!(split));
    }
    if let Some(split) = task.fewshot_split {
        config.insert("fewshot_split".into(), json!(split));
    }
    let sampler = match task.sampler {
        Sampler::FirstN => "first_n",
        Sampler::Random => "default",
    };
    config.insert("fewshot_config".into(), json!({ "sampler": sampler }));
    config.insert("description".into(), json!(task.description));
    config.insert("target_delimiter".into(), json!(TARGET_DELIMITER));
    config.insert("fewshot_delimiter".into(), json!(FEWSHOT_DELIMITER));
    config.insert("num_fewshot".into(), json!(num_fewshot));
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

#[cfg(test)]
mod tests {
    use super::super::{mmlu, task};
    use super::*;

    #[test]
    fn a_group_is_lm_evals_size_weighted_mean_and_pooled_stderr() {
        // lm-eval 0.4.13 on the fixture records (tests/fixtures/lm_eval_reference.json, llama-tiny):
        // anatomy 1/3 ± 0.33333333333333337 (3 docs), geography 0.5 ± 0.5 (2 docs) → 0.4 ± 0.27888667551135854.
        let (anatomy, geography) = (task("mmlu_anatomy").unwrap(), task("mmlu_high_school_geography").unwrap());
        let result = |task, value, stderr, docs| TaskResult {
            task,
            original: docs,
            effective: docs,
            num_fewshot: 5,
            aggregates: vec![Aggregate { metric: "acc", value, stderr: Some(stderr) }],
        };
        let results = [result(anatomy, 1.0 / 3.0, 0.33333333333333337, 3), result(geography, 0.5, 0.5, 2)];
        let group = GroupResult::of("mmlu", mmlu::group_subtasks("mmlu"), &mmlu::subjects(None).collect::<Vec<_>>(), &results).unwrap();
        assert_eq!(group.docs, 5);
        assert!((group.aggregates[0].value - 0.4).abs() < 1e-12);
        assert!((group.aggregates[0].stderr.unwrap() - 0.27888667551135854).abs() < 1e-12);
        let stem = GroupResult::of("mmlu_stem", mmlu::group_subtasks("mmlu_stem"), &mmlu::subjects(Some(mmlu::Category::Stem)).collect::<Vec<_>>(), &results).unwrap();
        assert_eq!((stem.docs, stem.aggregates[0].value), (3, 1.0 / 3.0));
        let run = RunInfo { model: "m".into(), batch_size: 1, device: "cpu".into(), limit: None, num_fewshot: None, seconds: 0.0 };
        let document = results_json(&results, &[group], &run);
        assert_eq!(document["groups"]["mmlu"]["sample_count"]["acc,none"], 5);
        assert_eq!(document["group_subtasks"]["mmlu"], json!(["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]));
        assert_eq!(document["n-shot"]["mmlu_anatomy"], 5);
    }
}
