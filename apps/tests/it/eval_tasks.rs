//! `llmfs eval tasks` end to end with the real binary: the tiny GPT-2 fixture on the task records
//! of `tests/fixtures/data/tasks/` (through `--data-dir`, and from the loopback fake hub as the
//! tasks' Hugging Face data sets, then offline from the cache); the `--json` file in lm-eval's
//! results schema, its values equal to `tests/fixtures/lm_eval_reference.json` (lm-eval 0.4.13's
//! own results on the same records; scripts/reference/lm_eval_reference.py).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::ArrayRef;
use serde_json::Value;

use crate::common::*;

/// lm-eval's results for `task` on gpt2-tiny: 0-shot, or `fewshot` (the other tasks 2-shot);
/// MMLU's subjects are kept apart (5-shot, with their group).
fn reference_results(task: &str, fewshot: bool) -> Value {
    let text = std::fs::read_to_string(fixtures().join("lm_eval_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let model = &reference["models"]["gpt2-tiny"];
    let tasks = match (task.starts_with("mmlu_"), fewshot) {
        (true, _) => &model["mmlu"]["tasks"],
        (false, true) => &model["fewshot"]["tasks"],
        (false, false) => &model["tasks"],
    };
    tasks[task]["results"].clone()
}

fn eval_tasks(home: &Path, tasks: &str, json: &Path, flags: &[&str]) -> std::process::Output {
    let mut cmd = llmfs(home);
    cmd.args(["eval", "tasks", "--device", "cpu", "--threads", "2", "--tasks", tasks, "--model"]).arg(tiny_model_dir()).arg("--json").arg(json).args(flags);
    run(&mut cmd)
}

/// Every metric and standard error of `task` in the results file equals lm-eval's: acc's to
/// 1e-12, perplexity's to 1e-4 relative (it carries the f32 log-likelihoods' rounding); the same keys.
fn assert_task_matches(results: &Value, task: &str) {
    assert_matches(results, task, false);
}

fn assert_matches(results: &Value, task: &str, fewshot: bool) {
    let ours = results["results"][task].as_object().unwrap_or_else(|| panic!("no results for {task}: {results}"));
    let theirs = reference_results(task, fewshot);
    let theirs = theirs.as_object().unwrap();
    let mut our_keys: Vec<&String> = ours.keys().collect();
    let mut their_keys: Vec<&String> = theirs.keys().collect();
    our_keys.sort();
    their_keys.sort();
    assert_eq!(our_keys, their_keys, "{task}");
    for (key, value) in theirs {
        let Some(expected) = value.as_f64() else { continue };
        if key == "sample_len" {
            assert_eq!(ours[key], *value, "{task} {key}");
            continue;
        }
        let got = ours[key].as_f64().unwrap();
        let tolerance = if key.starts_with("perplexity") { 1e-4 } else { 1e-12 };
        assert!(got == expected || ((got - expected) / expected).abs() < tolerance, "{task} {key}: {got} vs lm-eval's {expected}");
    }
}

#[test]
fn results_from_a_data_dir_equal_lm_evals() {
    let home = tempfile::tempdir().unwrap();
    let json = home.path().join("results.json");
    let tasks = "arc_easy,arc_challenge,openbookqa,piqa,winogrande,lambada_openai,hellaswag";
    let out = eval_tasks(home.path(), tasks, &json, &["--data-dir", fixtures().join("data/tasks").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in ["results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"] {
        assert!(results.get(key).is_some(), "no `{key}` in {results}");
    }
    for task in tasks.split(',') {
        assert_task_matches(&results, task);
        assert_eq!(results["n-shot"][task], 0);
        assert_eq!(results["n-samples"][task]["original"], results["n-samples"][task]["effective"]);
    }
    assert_eq!(results["configs"]["arc_easy"]["doc_to_text"], "Question: {{question}}\nAnswer:");
    assert_eq!(results["configs"]["arc_easy"]["target_delimiter"], " ");
    assert_eq!(results["higher_is_better"]["lambada_openai"]["perplexity"], false);
    // lm-eval's table on stdout, one row per metric
    let table = stdout(&out);
    assert!(table.contains("|arc_easy        |      1|none  |     0|acc       |↑  |    0.4000|±  |    0.2449|"), "{table}");

    // --limit: the first docs only, the split's size kept as `original`
    let out = eval_tasks(home.path(), "piqa", &json, &["--limit", "2", "--data-dir", fixtures().join("data/tasks").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(results["n-samples"]["piqa"], serde_json::json!({ "original": 4, "effective": 2 }));
    assert_eq!(results["config"]["limit"], 2);
}

/// `--num-fewshot 2` on the other tasks: each doc's examples drawn as lm-eval's seeded sampler
/// draws them from the train split (LAMBADA: its test split), equal to `lm_eval --num_fewshot 2`.
#[test]
fn few_shot_results_equal_lm_evals() {
    let home = tempfile::tempdir().unwrap();
    let json = home.path().join("results.json");
    let tasks = "arc_easy,arc_challenge,openbookqa,piqa,winogrande,lambada_openai,hellaswag";
    let out = eval_tasks(home.path(), tasks, &json, &["--num-fewshot", "2", "--data-dir", fixtures().join("data/tasks").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for task in tasks.split(',') {
        assert_matches(&results, task, true);
        assert_eq!(results["n-shot"][task], 2);
        assert_eq!(results["configs"][task]["num_fewshot"], 2);
        assert_eq!(results["configs"][task]["fewshot_config"]["sampler"], "default");
    }
    assert_eq!(results["configs"]["arc_easy"]["training_split"], "train");
    assert!(results["configs"]["lambada_openai"].get("training_split").is_none());
    assert_eq!(results["config"]["num_fewshot"], 2);
}

#[test]
fn tasks_come_from_the_hub_then_from_the_cache_offline() {
    let data = fixtures().join("data/tasks");
    let hub = FakeHub::start(HashMap::from([
        ("datasets/baber/piqa".to_string(), HashMap::from([("validation.jsonl".to_string(), data.join("piqa/validation.jsonl"))])),
        ("datasets/EleutherAI/lambada_openai".to_string(), HashMap::from([("test.jsonl".to_string(), data.join("lambada_openai/test.jsonl"))])),
    ]));
    let home = tempfile::tempdir().unwrap();
    let json = home.path().join("results.json");
    for offline in [false, true] {
        let mut cmd = llmfs(home.path());
        cmd.env("HF_ENDPOINT", &hub.url).args(["eval", "tasks", "--device", "cpu", "--tasks", "piqa,lambada_openai", "--model"]);
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        let requests = hub.request_count();
        let out = run(cmd.arg(tiny_model_dir()).arg("--json").arg(&json));
        assert!(out.status.success(), "{}", stderr(&out));
        let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_task_matches(&results, "piqa");
        assert_task_matches(&results, "lambada_openai");
        if offline {
            assert_eq!(hub.request_count(), requests, "offline, nothing is asked of the hub");
        }
    }
}

/// `fixtures/data/tasks/<task>/<split>.jsonl` of an MMLU subject as the hub's `cais/mmlu` holds
/// it: `question`, `subject`, `choices` (a list of strings), `answer` (an integer), in parquet.
fn write_mmlu_parquet(jsonl: &Path, out: &Path) {
    use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
    let (mut question, mut subject, mut answer) = (StringBuilder::new(), StringBuilder::new(), Int64Builder::new());
    let mut choices = ListBuilder::new(StringBuilder::new());
    for line in std::fs::read_to_string(jsonl).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        question.append_value(record["question"].as_str().unwrap());
        subject.append_value(record["subject"].as_str().unwrap_or("anatomy"));
        for choice in record["choices"].as_array().unwrap() {
            choices.values().append_value(choice.as_str().unwrap());
        }
        choices.append(true);
        answer.append_value(record["answer"].as_i64().unwrap());
    }
    let columns: [(&str, ArrayRef); 4] = [
        ("question", Arc::new(question.finish())),
        ("subject", Arc::new(subject.finish())),
        ("choices", Arc::new(choices.finish())),
        ("answer", Arc::new(answer.finish())),
    ];
    let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(out).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// An MMLU subject from the hub's own `cais/mmlu` layout (one directory of parquet shards per
/// subject, `all/` beside them): its test and dev splits found and scored as from `--data-dir`.
#[test]
fn mmlu_comes_from_the_hubs_cais_mmlu_layout() {
    let home = tempfile::tempdir().unwrap();
    let data = fixtures().join("data/tasks/mmlu_anatomy");
    let parquet = home.path().join("parquet");
    std::fs::create_dir_all(&parquet).unwrap();
    for split in ["test", "dev"] {
        write_mmlu_parquet(&data.join(format!("{split}.jsonl")), &parquet.join(format!("{split}.parquet")));
    }
    let files = HashMap::from([
        ("anatomy/test-00000-of-00001.parquet".to_string(), parquet.join("test.parquet")),
        ("anatomy/dev-00000-of-00001.parquet".to_string(), parquet.join("dev.parquet")),
        ("anatomy/validation-00000-of-00001.parquet".to_string(), parquet.join("dev.parquet")),
        ("all/test-00000-of-00001.parquet".to_string(), parquet.join("test.parquet")),
        ("all/dev-00000-of-00001.parquet".to_string(), parquet.join("dev.parquet")),
    ]);
    let hub = FakeHub::start(HashMap::from([("datasets/cais/mmlu".to_string(), files)]));
    let json = home.path().join("results.json");
    let mut cmd = llmfs(home.path());
    cmd.env("HF_ENDPOINT", &hub.url).args(["eval", "tasks", "--device", "cpu", "--tasks", "mmlu_anatomy", "--model"]);
    let out = run(cmd.arg(tiny_model_dir()).arg("--json").arg(&json));
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_task_matches(&results, "mmlu_anatomy");
    assert_eq!(results["n-shot"]["mmlu_anatomy"], 5);
}

/// MMLU subjects 5-shot by default (the dev split's first docs after the description), equal to
/// lm-eval's `--num_fewshot 5`; `--num-fewshot 0` is the description alone; `mmlu` asks for all
/// 57 subjects' directories.
#[test]
fn mmlu_subjects_are_five_shot_as_lm_eval() {
    let home = tempfile::tempdir().unwrap();
    let json = home.path().join("results.json");
    let data_dir = fixtures().join("data/tasks");
    let tasks = "mmlu_anatomy,mmlu_high_school_geography";
    let out = eval_tasks(home.path(), tasks, &json, &["--data-dir", data_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for task in tasks.split(',') {
        assert_task_matches(&results, task);
        assert_eq!(results["n-shot"][task], 5);
        assert_eq!(results["configs"][task]["fewshot_split"], "dev");
    }
    assert_eq!(results["configs"]["mmlu_anatomy"]["description"], "The following are multiple choice questions (with answers) about anatomy.\n\n");
    assert!(results.get("groups").is_none(), "subjects named one by one are no group");

    let out = eval_tasks(home.path(), "mmlu_anatomy", &json, &["--num-fewshot", "0", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(results["n-shot"]["mmlu_anatomy"], 0);

    let out = eval_tasks(home.path(), "mmlu", &json, &["--data-dir", data_dir.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("mmlu_abstract_algebra"), "{}", stderr(&out));
    let out = eval_tasks(home.path(), "mmlu_high_school_geography", &json, &["--num-fewshot", "7", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("7 few-shot examples asked for, the dev split has 6"), "{}", stderr(&out));
}

#[test]
fn bad_arguments_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let json = home.path().join("results.json");
    let data_dir = fixtures().join("data/tasks");
    let cases: [(&str, &[&str], &str); 3] = [
        ("arc_easy,mmlu_x", &[], "unknown task `mmlu_x`"),
        ("arc_easy", &["--num-fewshot", "7"], "7 few-shot examples asked for, the train split has 6"),
        ("arc_easy", &["--data-dir", "/nonexistent-llmfs-dir"], "no directory /nonexistent-llmfs-dir/arc_easy"),
    ];
    for (tasks, flags, message) in cases {
        let mut flags = flags.to_vec();
        if !flags.contains(&"--data-dir") {
            flags.extend(["--data-dir", data_dir.to_str().unwrap()]);
        }
        let out = eval_tasks(home.path(), tasks, &json, &flags);
        assert!(!out.status.success() && stderr(&out).contains(message), "{tasks} {flags:?}: {}", stderr(&out));
        assert!(!json.exists());
    }
}

/// `finetune instruct --eval-tasks`: the tasks are scored every 3 steps and at the epoch's end (once
/// at the final step), into metrics.jsonl; the last scores are what `eval tasks` gives the trained
/// model.
#[test]
fn tasks_are_scored_during_training_as_eval_tasks_scores_the_result() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("run");
    let data_dir = fixtures().join("data/tasks");
    let flags = ["--epochs", "1", "--batch-size", "8", "--eval-tasks", "arc_easy,lambada_openai", "--eval-tasks-every", "3", "--eval-tasks-data-dir", data_dir.to_str().unwrap()];
    let out = run(&mut finetune_instruct(home.path(), &run_dir, false, &flags));
    assert!(out.status.success(), "{}", stderr(&out));
    let events = pipelines::runs::metrics::read_metrics(&run_dir.join("metrics.jsonl")).unwrap();
    let scored = |task: &str| events.iter().filter(|e| e.split == task).collect::<Vec<_>>();
    let arc = scored("arc_easy");
    assert_eq!(arc.iter().map(|e| e.step).collect::<Vec<_>>(), [3, 6], "every 3 steps; the epoch's end at step 6 is not scored twice");
    assert_eq!(scored("lambada_openai").len(), 2);

    let json = home.path().join("results.json");
    let mut cmd = llmfs(home.path());
    cmd.args(["eval", "tasks", "--device", "cpu", "--threads", "1", "--tasks", "arc_easy,lambada_openai", "--model"]).arg(&run_dir);
    let out = run(cmd.arg("--json").arg(&json).arg("--data-dir").arg(&data_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let results: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let last_arc = arc[1];
    assert_eq!(last_arc.extra["acc"].as_f64(), results["results"]["arc_easy"]["acc,none"].as_f64());
    assert_eq!(last_arc.extra["acc_norm"].as_f64(), results["results"]["arc_easy"]["acc_norm,none"].as_f64());
    assert_eq!(last_arc.accuracy, last_arc.extra["acc_norm"].as_f64(), "the headline number is acc_norm");
    let lambada = scored("lambada_openai")[1];
    let perplexity = results["results"]["lambada_openai"]["perplexity,none"].as_f64().unwrap();
    assert!((lambada.perplexity.unwrap() - perplexity).abs() <= 1e-9 * perplexity, "{:?} vs {perplexity}", lambada.perplexity);
    let run_json: Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["config"]["details"]["eval_tasks"]["tasks"][0]["task"], "arc_easy");
}
