//! `llmfs finetune spam` end to end, offline: the data zip and the model both come from a fake
//! server on 127.0.0.1 (the model as a hub repo), then `classify` and `plot` on the run.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::common::*;

#[test]
fn finetune_spam_then_classify_and_plot() {
    let mut data_repo: HashMap<String, PathBuf> = HashMap::new();
    data_repo.insert("sms_spam_collection.zip".into(), fixtures().join("data/sms_spam_collection.zip"));
    let hub = FakeHub::start(HashMap::from([("llmfs-test/tiny-gpt2".to_string(), tiny_repo()), ("uci/spam".to_string(), data_repo)]));
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("spam");
    let run_dir = home.path().join("run");
    let url = format!("{}/uci/spam/resolve/main/sms_spam_collection.zip", hub.url);

    let out = run(llmfs(home.path()).env("HF_ENDPOINT", &hub.url).args([
        "finetune", "spam", "--model", "llmfs-test/tiny-gpt2", "--url", &url, "--epochs", "1", "--max-length", "24",
        "--eval-every", "5", "--eval-batches", "2", "--json", "--plain",
    ]).arg("--data").arg(&data).arg("--run-dir").arg(&run_dir));
    assert!(out.status.success());
    let report = last_json(&out);
    assert_eq!(report["steps"], 14, "112 training texts in batches of 8");
    assert_eq!(report["length"], 24);
    assert!(report["test_accuracy"].as_f64().unwrap() >= 0.0);
    let err = stderr(&out);
    assert!(err.contains("preparing them from") && err.contains("epoch 1 step 14 train loss"), "{err}");
    for file in ["train.csv", "validation.csv", "test.csv"] {
        assert!(data.join(file).is_file());
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["split"] == "train" && e["accuracy"].is_number()));
    assert!(events.iter().any(|e| e["split"] == "val" && e["loss"].is_number() && e["accuracy"].is_number()));
    for file in ["model/config.json", "model/model.safetensors", "plots/loss.png", "plots/accuracy.png", "run.json"] {
        assert!(run_dir.join(file).is_file(), "{file}");
    }

    let out = run(llmfs(home.path()).args(["classify", "--json", "--text", "You won a free cruise! Call now", "--text", "Are we still on for dinner?", "--model"]).arg(&run_dir));
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["label"] == "ham" || l["label"] == "spam"));

    // `eval spam` on the test split agrees with the run's own test accuracy.
    let out = run(llmfs(home.path()).args(["eval", "spam", "--json", "--model"]).arg(&run_dir).arg("--data").arg(&data));
    assert!(out.status.success(), "{}", stderr(&out));
    let eval = last_json(&out);
    assert_eq!(eval["n"], 32);
    assert!((eval["accuracy"].as_f64().unwrap() - report["test_accuracy"].as_f64().unwrap()).abs() < 1e-9, "{eval} vs {report}");
    assert!(stderr(&out).contains("confusion"));

    let out = run(llmfs(home.path()).arg("plot").arg(&run_dir));
    assert!(out.status.success());
    assert!(stdout(&out).contains("loss.png"));

    // Generating with a classifier run is refused with a pointer to `classify`.
    let out = run(llmfs(home.path()).args(["generate", "--prompt", "hi", "--model"]).arg(&run_dir));
    assert!(stderr(&out).contains("llmfs classify"), "{}", stderr(&out));
}
