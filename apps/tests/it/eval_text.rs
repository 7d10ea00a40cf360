//! `llmfs eval text` on the 70 pairs of tests/fixtures/text_metrics_reference.json written as a
//! responses file: the `--json` line and the report equal rouge-score's and sacrebleu's numbers.

use std::path::Path;

use crate::common::*;
use serde_json::{Value, json};

fn fixture() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("text_metrics_reference.json")).unwrap()).unwrap()
}

fn assert_close(got: &Value, want: f64, what: &str) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got} is not a number"));
    assert!((got - want).abs() <= 1e-6, "{what}: {got} != {want}");
}

/// The mean over the fixture's pairs of `pair[group][name]`.
fn mean(fixture: &Value, group: &str, name: &str) -> f64 {
    let pairs = fixture["pairs"].as_array().unwrap();
    pairs.iter().map(|p| p[group][name].as_f64().unwrap()).sum::<f64>() / pairs.len() as f64
}

fn eval_text(home: &Path, args: &[&str]) -> std::process::Output {
    run(llmfs(home).args(["eval", "text"]).args(args))
}

#[test]
fn scores_equal_rouge_score_and_sacrebleu() {
    let home = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let pairs = fixture["pairs"].as_array().unwrap();
    // generate-responses' layout: a JSON list with `output` (reference) and `model_response`.
    let records: Vec<Value> = pairs
        .iter()
        .map(|p| json!({ "instruction": "i", "input": "", "output": p["reference"], "model_response": p["hypothesis"] }))
        .collect();
    let responses = home.path().join("test_responses.json");
    std::fs::write(&responses, serde_json::to_vec_pretty(&records).unwrap()).unwrap();

    let out = eval_text(home.path(), &["--json", "--responses", responses.to_str().unwrap()]);
    assert!(out.status.success());
    let summary = last_json(&out);
    assert_eq!(summary.as_object().unwrap().len(), 8, "{summary}");
    // The keys in the documented order.
    let line = stdout(&out).lines().last().unwrap().to_string();
    let at: Vec<usize> = ["\"n\"", "\"rouge1\"", "\"rouge2\"", "\"rougeL\"", "\"rougeLsum\"", "\"bleu\"", "\"chrf\"", "\"exact\""].iter().map(|k| line.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
    assert_eq!(summary["n"], pairs.len());
    for name in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        assert_close(&summary[name], mean(&fixture, "rouge", name), name);
    }
    assert_close(&summary["bleu"], fixture["corpus"]["bleu"].as_f64().unwrap(), "corpus BLEU");
    assert_close(&summary["chrf"], fixture["corpus"]["chrf"].as_f64().unwrap(), "corpus chrF");
    let exact = pairs.iter().filter(|p| p["reference"].as_str().unwrap().trim() == p["hypothesis"].as_str().unwrap().trim()).count();
    assert_close(&summary["exact"], exact as f64 / pairs.len() as f64, "exact");
    assert!(stderr(&out).contains("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"), "the BLEU signature is printed");

    // The report beside the responses: every record's sentence scores.
    let report: Value = serde_json::from_slice(&std::fs::read(home.path().join("test_responses.text-scores.json")).unwrap()).unwrap();
    assert_eq!(report["n"], pairs.len());
    assert_eq!(report["responses"], responses.to_str().unwrap());
    let rows = report["records"].as_array().unwrap();
    assert_eq!(rows.len(), pairs.len());
    for (i, (row, pair)) in rows.iter().zip(pairs).enumerate() {
        assert_eq!(row["at"], format!("record {}", i + 1));
        for (name, want) in [("rougeLsum", &pair["rouge"]["rougeLsum"]), ("bleu", &pair["bleu"]), ("chrf", &pair["chrf"])] {
            assert_close(&row[name], want.as_f64().unwrap(), &format!("record {i} {name}"));
        }
    }
}

#[test]
fn jsonl_with_chosen_fields_metrics_and_the_stemmer() {
    let home = tempfile::tempdir().unwrap();
    let fixture = fixture();
    let lines: String = fixture["pairs"].as_array().unwrap().iter().map(|p| format!("{}\n", json!({ "gold": p["reference"], "pred": p["hypothesis"] }))).collect();
    let responses = home.path().join("answers.jsonl");
    std::fs::write(&responses, lines).unwrap();
    let report = home.path().join("out/scores.json");

    let args = ["--json", "--metrics", "rouge", "--stemmer", "--reference-field", "gold", "--response-field", "pred", "--out", report.to_str().unwrap(), "--responses", responses.to_str().unwrap()];
    let out = eval_text(home.path(), &args);
    assert!(out.status.success());
    let summary = last_json(&out);
    let keys: Vec<&str> = summary.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["n", "rouge1", "rouge2", "rougeL", "rougeLsum"]);
    for name in ["rouge1", "rouge2", "rougeL", "rougeLsum"] {
        assert_close(&summary[name], mean(&fixture, "rouge_stemmed", name), name);
    }
    let written: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(written["stemmer"], true);
    assert!(written["records"][0].get("bleu").is_none());

    // A record without the field: one line naming the file and the line.
    std::fs::write(&responses, "{\"gold\": \"a\", \"pred\": \"a\"}\n{\"gold\": \"b\"}\n").unwrap();
    let out = eval_text(home.path(), &args);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("answers.jsonl") && error.contains("line 2 has no \"pred\""), "{error}");
}
