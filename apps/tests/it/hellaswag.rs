//! `llmfs prepare hellaswag` and `llmfs eval hellaswag` end to end with the real binary: the tiny
//! fixture model on the 40 fixture rows, compared with `tests/fixtures/hellaswag_tiny_reference.json`
//! (build-nanogpt's scoring in PyTorch + transformers); downloads from a loopback server.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::common::*;
use serde_json::{Value, json};

fn data_file() -> PathBuf {
    fixtures().join("data/hellaswag_val_40.jsonl")
}

fn reference_examples() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("hellaswag_tiny_reference.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["examples"].as_array().unwrap().clone()
}

/// `{"ind","label","pred","pred_norm"}` of the first `n` reference examples.
fn expected_predictions(n: usize) -> Vec<Value> {
    reference_examples()[..n]
        .iter()
        .map(|e| json!({ "ind": e["ind"], "label": e["label"], "pred": e["pred"], "pred_norm": e["pred_norm"] }))
        .collect()
}

fn eval_cmd(home: &std::path::Path) -> std::process::Command {
    let mut cmd = llmfs(home);
    cmd.args(["eval", "hellaswag", "--model"]).arg(tiny_model_dir()).args(["--threads", "2"]);
    cmd
}

#[test]
fn eval_prints_json_and_writes_predictions() {
    let home = tempfile::tempdir().unwrap();
    let predictions = home.path().join("out/predictions.jsonl");
    let out = run(eval_cmd(home.path())
        .arg("--data")
        .arg(data_file())
        .args(["--batch-size", "6", "--json", "--predictions"])
        .arg(&predictions));
    assert!(out.status.success());
    assert_eq!(last_json(&out), json!({ "n": 40, "acc": 0.25, "acc_norm": 0.3 }));
    assert_eq!(stdout(&out).lines().count(), 1, "only the JSON line on stdout");
    let messages = stderr(&out);
    assert!(messages.contains("40 examples, acc 0.2500 (10/40), acc_norm 0.3000 (12/40)"), "{messages}");

    let written = std::fs::read_to_string(&predictions).unwrap();
    let lines: Vec<Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, expected_predictions(40));
    let names: Vec<String> = std::fs::read_dir(predictions.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["predictions.jsonl"], "no temporary file left");
}

#[test]
fn eval_with_a_limit_scores_the_first_examples() {
    let home = tempfile::tempdir().unwrap();
    let predictions = home.path().join("p.jsonl");
    let out = run(eval_cmd(home.path()).arg("--data").arg(data_file()).args(["--limit", "9", "--batch-size", "1", "--json", "--predictions"]).arg(&predictions));
    assert!(out.status.success());
    let expected = expected_predictions(9);
    let correct = expected.iter().filter(|p| p["pred"] == p["label"]).count() as f64;
    let correct_norm = expected.iter().filter(|p| p["pred_norm"] == p["label"]).count() as f64;
    assert_eq!(last_json(&out), json!({ "n": 9, "acc": correct / 9.0, "acc_norm": correct_norm / 9.0 }));
    let lines: Vec<Value> = std::fs::read_to_string(&predictions).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, expected);
}

/// The fixture served like raw.githubusercontent.com serves the repository's data/ folder.
fn serve_val() -> (FakeHub, String) {
    let files = HashMap::from([("hellaswag_val.jsonl".to_string(), data_file())]);
    let hub = FakeHub::start(HashMap::from([("rowanz/hellaswag".to_string(), files)]));
    let base = format!("{}/rowanz/hellaswag/resolve/main/", hub.url);
    (hub, base)
}

#[test]
fn prepare_downloads_and_eval_reads_the_data_directory() {
    let (_hub, base) = serve_val();
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("hellaswag");
    let out = run(llmfs(home.path()).args(["prepare", "hellaswag", "--url", &base, "--out"]).arg(&data_dir).arg("--json"));
    assert!(out.status.success());
    let json = last_json(&out);
    let path = data_dir.join("hellaswag_val.jsonl");
    assert_eq!(json["splits"], json!([{ "split": "val", "path": path, "examples": 40, "reused": false }]));
    assert!(stderr(&out).contains("val split: 40 examples"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(data_file()).unwrap());

    // eval finds the split in --data-dir: no server needed any more.
    drop(_hub);
    let out = run(eval_cmd(home.path())
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--url", "http://127.0.0.1:9/nothing/", "--split", "val", "--limit", "4", "--json"]));
    assert!(out.status.success());
    let expected = expected_predictions(4);
    let correct = expected.iter().filter(|p| p["pred"] == p["label"]).count() as f64;
    assert_eq!(last_json(&out)["n"], 4);
    assert_eq!(last_json(&out)["acc"], correct / 4.0);
}

#[test]
fn prepare_all_fails_on_a_missing_split_naming_it() {
    let (_hub, base) = serve_val();
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["prepare", "hellaswag", "--split", "all", "--url", &base, "--out"]).arg(home.path().join("hs")));
    assert!(!out.status.success());
    let messages = stderr(&out);
    assert!(messages.contains("hellaswag_train.jsonl") && messages.contains("404"), "{messages}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.jsonl");
    let good = std::fs::read_to_string(data_file()).unwrap();
    std::fs::write(&bad, format!("{}\n{{\"ctx\": \"x\", \"endings\": [\"a\", \"b\", \"c\"], \"label\": 0}}\n", good.lines().next().unwrap())).unwrap();
    let out = run(eval_cmd(home.path()).arg("--data").arg(&bad));
    assert!(!out.status.success());
    let messages = stderr(&out);
    assert!(messages.contains(&format!("{} line 2: \"endings\" has 3 entries, expected 4", bad.display())), "{messages}");

    let out = run(eval_cmd(home.path()).args(["--split", "test"]).arg("--data-dir").arg(home.path()));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("the HellaSwag test split has no labels"), "{}", stderr(&out));

    let out = run(eval_cmd(home.path()).args(["--split", "dev"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected train, val or test"), "{}", stderr(&out));
}
