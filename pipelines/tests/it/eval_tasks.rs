//! `eval::tasks` against lm-evaluation-harness: `tests/fixtures/lm_eval_reference.json`, made by
//! scripts/reference/lm_eval_reference.py running lm-eval's own task configs and HFLM on the tiny
//! fixture models and the records of `tests/fixtures/data/tasks/<task>/`. Each doc's requests
//! (the rendered prompt and continuations) are equal, each request's log-likelihood agrees to
//! 2e-5 relative (f32 models, different kernels) and its is_greedy is equal, and so are the docs'
//! metrics and the tasks' aggregates and standard errors.

use gpt::Tokenizer;
use gpt::burn::prelude::*;
use gpt::io::HubOptions;
use gpt::models::LanguageModel;
use pipelines::data::source::DataSource;
use pipelines::eval::tasks::{BOOTSTRAP_ITERS, Fewshot, Sample, TASKS, Task, aggregate_samples, evaluate, evaluate_fewshot, group_aggregate};
use serde_json::Value;

use crate::common_http::fixtures;

/// Relative tolerance of a log-likelihood (a sum of f32 log-probabilities, ~1e-6 each).
const LL_TOLERANCE: f64 = 2e-5;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("lm_eval_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model_and_tokenizer(name: &str) -> (LanguageModel, Tokenizer) {
    let dir = fixtures().join(name);
    let tokenizer = if name == "gpt2-tiny" { Tokenizer::gpt2() } else { Tokenizer::from_model_dir(&dir).unwrap() };
    (gpt::hf::load_language_model_dir(&dir, &Device::flex()).unwrap(), tokenizer)
}

fn records(task: &Task) -> Vec<pipelines::data::records::Record> {
    split(task, task.split)
}

fn split(task: &Task, split: &str) -> Vec<pipelines::data::records::Record> {
    let dir = fixtures().join("data/tasks").join(task.name);
    let source = DataSource::open(dir.to_str().unwrap(), &HubOptions::from_env()).unwrap();
    source.read(split, None).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn check_samples(model: &str, task: &Task, samples: &[Sample], expected: &Value) {
    let expected = expected["samples"].as_array().unwrap();
    assert_eq!(samples.len(), expected.len(), "{model} {}", task.name);
    for (sample, expected) in samples.iter().zip(expected) {
        let at = format!("{model} {} doc {}", task.name, sample.doc_id);
        assert_eq!(sample.doc_id as u64, expected["doc_id"].as_u64().unwrap(), "{at}");
        let arguments: Vec<(String, String)> = expected["arguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(sample.doc.requests, arguments, "{at}: the rendered requests");
        for (i, (ours, theirs)) in sample.resps.iter().zip(expected["resps"].as_array().unwrap()).enumerate() {
            let ll = theirs[0].as_f64().unwrap();
            assert!(rel(ours.logprob, ll) < LL_TOLERANCE, "{at} request {i}: log-likelihood {} vs lm-eval's {ll}", ours.logprob);
            assert_eq!(ours.greedy, theirs[1].as_bool().unwrap(), "{at} request {i}: is_greedy");
        }
        for (metric, value) in expected["metrics"].as_object().unwrap() {
            let ours = sample.metrics[metric.as_str()];
            let theirs = value.as_f64().unwrap();
            // perplexity's per-doc value is the log-likelihood itself
            let close = if metric == "perplexity" { rel(ours, theirs) < LL_TOLERANCE } else { ours == theirs };
            assert!(close, "{at}: {metric} {ours} vs lm-eval's {theirs}");
        }
    }
}

fn check_aggregates(model: &str, task: &Task, samples: &[Sample], expected: &Value) {
    let results = &expected["results"];
    for aggregate in aggregate_samples(task, samples, BOOTSTRAP_ITERS) {
        let at = format!("{model} {} {}", task.name, aggregate.metric);
        let value = results[format!("{},none", aggregate.metric)].as_f64().unwrap();
        let stderr = &results[format!("{}_stderr,none", aggregate.metric)];
        // acc is a mean of 0/1 values (exact up to summation order); perplexity carries the log-likelihoods' error.
        let tolerance = if aggregate.metric == "perplexity" { 1e-4 } else { 1e-12 };
        assert!(rel(aggregate.value, value) < tolerance || aggregate.value == value, "{at}: {} vs lm-eval's {value}", aggregate.value);
        let ours = aggregate.stderr.unwrap();
        let theirs = stderr.as_f64().unwrap();
        assert!(rel(ours, theirs) < tolerance || ours == theirs, "{at} stderr: {ours} vs lm-eval's {theirs}");
    }
}

/// Every task on `model_name` against the fixture's `section`: 0-shot (`tasks`) or few-shot
/// (`fewshot`: each doc's examples drawn as lm-eval's seeded sampler draws them, from the train
/// split; LAMBADA from its test split, the doc itself included; HellaSwag, PIQA and Winogrande
/// leave the doc out).
fn check_model(model_name: &str, section: &str) {
    let reference = reference();
    let (model, tokenizer) = model_and_tokenizer(model_name);
    let (expected_tasks, k) = match section {
        "fewshot" => (&reference["models"][model_name]["fewshot"]["tasks"], reference["models"][model_name]["fewshot"]["num_fewshot"].as_u64().unwrap() as usize),
        _ => (&reference["models"][model_name]["tasks"], 0),
    };
    for task in TASKS {
        let expected = &expected_tasks[task.name];
        assert!(expected.is_object(), "the fixture has no {} for {model_name}", task.name);
        assert_eq!(expected["n-shot"].as_u64(), Some(k as u64), "{}", task.name);
        let examples = if k > 0 { split(task, task.examples_split()) } else { Vec::new() };
        let mut fewshot = Fewshot::new(task, examples, k).unwrap();
        // 3 docs' units per forward pass: contexts of different lengths share a pass.
        let samples = evaluate_fewshot(&model, &tokenizer, task, &mut fewshot, &records(task), 3, |_| {}).unwrap();
        check_samples(model_name, task, &samples, expected);
        check_aggregates(model_name, task, &samples, expected);
    }
}

#[test]
fn gpt2_scores_every_task_as_lm_eval_does() {
    check_model("gpt2-tiny", "tasks");
}

#[test]
fn llama_family_models_score_every_task_as_lm_eval_does() {
    check_model("llama-tiny", "tasks");
}

/// MMLU 5-shot (the description and the first 5 dev docs before each question; the prompts are
/// longer than gpt2-tiny's 128 tokens, so the left truncation is checked too) on two subjects,
/// and their group's acc and pooled stderr as lm-eval's group aggregation.
fn check_mmlu(model_name: &str) {
    let reference = reference();
    let (model, tokenizer) = model_and_tokenizer(model_name);
    let expected = &reference["models"][model_name]["mmlu"];
    let k = expected["num_fewshot"].as_u64().unwrap() as usize;
    let mut scored = Vec::new();
    for (name, expected) in expected["tasks"].as_object().unwrap() {
        let task = pipelines::eval::tasks::task(name).unwrap();
        assert_eq!(expected["n-shot"].as_u64(), Some(k as u64));
        let mut fewshot = Fewshot::new(task, split(task, "dev"), k).unwrap();
        let samples = evaluate_fewshot(&model, &tokenizer, task, &mut fewshot, &records(task), 2, |_| {}).unwrap();
        check_samples(model_name, task, &samples, expected);
        check_aggregates(model_name, task, &samples, expected);
        let acc = aggregate_samples(task, &samples, BOOTSTRAP_ITERS).remove(0);
        scored.push((acc.value, acc.stderr, samples.len()));
    }
    assert_eq!(scored.len(), 2);
    let group = group_aggregate("acc", &scored);
    let theirs = &expected["group"];
    assert!(rel(group.value, theirs["acc,none"].as_f64().unwrap()) < 1e-12, "{model_name} group acc {group:?} vs {theirs}");
    assert!(rel(group.stderr.unwrap(), theirs["acc_stderr,none"].as_f64().unwrap()) < 1e-12, "{model_name} group stderr {group:?} vs {theirs}");
}

#[test]
fn mmlu_five_shot_scores_as_lm_eval_does() {
    check_mmlu("gpt2-tiny");
    check_mmlu("llama-tiny");
}

#[test]
fn gpt2_scores_every_task_few_shot_as_lm_eval_does() {
    check_model("gpt2-tiny", "fewshot");
}

#[test]
fn llama_family_models_score_every_task_few_shot_as_lm_eval_does() {
    check_model("llama-tiny", "fewshot");
}

#[test]
fn few_shot_needs_enough_examples() {
    // HellaSwag leaves the doc out of its draws, so lm-eval draws k + 1 of the 5 train docs.
    let task = pipelines::eval::tasks::task("hellaswag").unwrap();
    assert!(Fewshot::new(task, split(task, "train"), 4).is_ok());
    let error = Fewshot::new(task, split(task, "train"), 5).err().unwrap().to_string();
    assert!(error.contains("5 few-shot examples asked for (lm-eval draws one more, to leave the doc itself out), the train split has 5"), "{error}");
}

#[test]
fn mmlu_few_shot_needs_enough_dev_docs() {
    let task = pipelines::eval::tasks::task("mmlu_anatomy").unwrap();
    let error = Fewshot::new(task, split(task, "dev"), 6).err().unwrap().to_string();
    assert!(error.contains("6 few-shot examples asked for, the dev split has 5"), "{error}");
    let zero = Fewshot::new(task, split(task, "dev"), 0).unwrap().context(&records(task)[0]).unwrap();
    assert_eq!(zero, "The following are multiple choice questions (with answers) about anatomy.\n\n");
    assert_eq!(pipelines::eval::tasks::tasks_named("mmlu").unwrap().len(), 57);
    assert_eq!(pipelines::eval::tasks::tasks_named("mmlu_stem").unwrap().len(), 19);
}

#[test]
fn scores_do_not_depend_on_the_batch_size() {
    let (model, tokenizer) = model_and_tokenizer("gpt2-tiny");
    let task = pipelines::eval::tasks::task("arc_easy").unwrap();
    let records = records(task);
    let one = evaluate(&model, &tokenizer, task, &records, 1, |_| {}).unwrap();
    let mut progress = Vec::new();
    let all = evaluate(&model, &tokenizer, task, &records, 16, |done| progress.push(done)).unwrap();
    assert_eq!(progress, [records.len()]);
    for (a, b) in one.iter().zip(&all) {
        for (x, y) in a.resps.iter().zip(&b.resps) {
            assert!(rel(x.logprob, y.logprob) < 1e-5, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn bad_records_are_errors_naming_the_record() {
    let (model, tokenizer) = model_and_tokenizer("gpt2-tiny");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.jsonl");
    let good = r#"{"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}"#;
    let cases = [
        (r#"{"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"}"#, "the answer key \"C\""),
        (r#"{"question": 3, "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "A"}"#, "`question` is not a string"),
        (r#"{"question": "Q?", "answerKey": "A"}"#, "no `choices` object"),
    ];
    let task = pipelines::eval::tasks::task("arc_easy").unwrap();
    for (bad, message) in cases {
        std::fs::write(&path, format!("{good}\n{bad}\n")).unwrap();
        let records = pipelines::data::records::read_records(&path, None).unwrap();
        let error = format!("{:#}", evaluate(&model, &tokenizer, task, &records, 1, |_| {}).unwrap_err());
        assert!(error.contains("test.jsonl: line 2") && error.contains(message), "{error}");
    }
    assert!(pipelines::eval::tasks::task("mmlu_x").err().unwrap().to_string().contains("known: arc_easy"));
}

#[test]
fn a_greedy_continuation_is_greedy_and_a_changed_one_is_not() {
    use gpt::models::CausalLm;
    use pipelines::eval::loglikelihood::{Request, score_requests};
    let (model, tokenizer) = model_and_tokenizer("gpt2-tiny");
    let context = tokenizer.encode("The cat sat on the mat and the dog");
    // Three tokens of greedy decoding, one full pass each.
    let mut row = context.clone();
    for _ in 0..3 {
        let ids: Vec<i64> = row.iter().map(|&t| t as i64).collect();
        let logits = model.logits(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, row.len()]), &Device::flex()));
        let next = logits.slice([0..1, row.len() - 1..row.len()]).argmax(2).into_data().try_into_vec_as::<i64>().unwrap()[0];
        row.push(next as u32);
    }
    let greedy = row[context.len()..].to_vec();
    let mut changed = greedy.clone();
    changed[2] = (changed[2] + 1) % 50257;
    let request = Request { context, continuations: vec![greedy, changed, vec![7]] };
    let scores = score_requests(&model, &[request]).unwrap().remove(0);
    assert!(scores[0].greedy && !scores[1].greedy, "{scores:?}");
    assert_eq!((scores[0].tokens, scores[2].tokens), (3, 1));
    assert!(scores[0].logprob > scores[1].logprob);
}
