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

/// `finetune classify` on a file of 4 classes (a CSV here, the same rows as JSONL): a stratified
/// split with exact per-class counts, the classes in run.json and the saved classifier, every
/// class's scores in eval/metrics.json, and `classify` answering with one of the 4.
#[test]
fn finetune_classify_trains_on_any_labelled_file() {
    let home = tempfile::tempdir().unwrap();
    let topics = [("weather", "rain and wind today"), ("sports", "the team won the match"), ("food", "bread with cheese and soup"), ("music", "a song on the old guitar")];
    let mut csv = String::from("id,headline,body,topic\n");
    let mut jsonl = String::new();
    for i in 0..15 {
        for (topic, words) in topics {
            csv.push_str(&format!("{i},\"{words}, {i}\",more about {topic},{topic}\n"));
            jsonl.push_str(&format!("{}\n", serde_json::json!({ "headline": format!("{words}, {i}"), "body": format!("more about {topic}"), "topic": topic })));
        }
    }
    let (csv_path, jsonl_path) = (home.path().join("topics.csv"), home.path().join("topics.jsonl"));
    std::fs::write(&csv_path, csv).unwrap();
    std::fs::write(&jsonl_path, jsonl).unwrap();
    let finetune = |data: &std::path::Path, run_dir: &std::path::Path, extra: &[&str]| {
        run(llmfs(home.path())
            .args(["finetune", "classify", "--text-column", "headline,body", "--label-column", "topic", "--epochs", "2", "--max-length", "16"])
            .args(["--lr", "1e-3", "--json", "--plain", "--device", "cpu", "--model"])
            .arg(tiny_model_dir())
            .arg("--data")
            .arg(data)
            .arg("--run-dir")
            .arg(run_dir)
            .args(extra))
    };
    let run_dir = home.path().join("run");
    let out = finetune(&csv_path, &run_dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // 15 per class: ⌊0.7·15⌋ = 10 train, ⌊0.1·15⌋ = 1 validation, 4 test, each.
    assert!(err.contains("4 classes (food, music, sports, weather); 40 train / 4 validation / 16 test texts"), "{err}");
    let report = last_json(&out);
    assert_eq!(report["steps"], 10, "40 texts in batches of 8, 2 epochs");
    let run_json: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["config"]["labels"], serde_json::json!(["food", "music", "sports", "weather"]));
    assert_eq!(run_json["config"]["data"]["text_columns"], serde_json::json!(["headline", "body"]));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["id2label"]["3"], "weather");
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(run_dir.join("eval/metrics.json")).unwrap()).unwrap();
    let classes = metrics["test"]["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 4);
    assert!(classes.iter().all(|c| c["support"] == 4), "{classes:?}");
    assert!((metrics["test"]["accuracy"].as_f64().unwrap() - report["test_accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!(run_dir.join("plots/confusion.png").is_file(), "the test split's confusion matrix is drawn");

    // The same rows as JSONL split the same way (same seed): the same test texts, the same scores.
    let jsonl_run = home.path().join("run-jsonl");
    let out = finetune(&jsonl_path, &jsonl_run, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jsonl_metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(jsonl_run.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(jsonl_metrics["test"], metrics["test"]);

    let out = run(llmfs(home.path()).args(["classify", "--json", "--device", "cpu", "--text", "rain and wind again", "--model"]).arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let prediction: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(prediction["probabilities"].as_array().unwrap().len(), 4);

    // `eval classify` scores the run on any labelled file: here all 60 rows, 15 per class.
    let out = run(llmfs(home.path())
        .args(["eval", "classify", "--json", "--device", "cpu", "--text-column", "headline,body", "--label-column", "topic", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&jsonl_path));
    assert!(out.status.success(), "{}", stderr(&out));
    let scores = last_json(&out);
    assert_eq!(scores["n"], 60);
    assert!(scores["classes"].as_array().unwrap().iter().all(|c| c["support"] == 15), "{scores}");
    assert!(scores["macro_f1"].as_f64().unwrap() <= 1.0 && stderr(&out).contains("macro-F1"));

    // A class --labels does not name is an error naming the row; so is a missing column.
    let out = finetune(&csv_path, &home.path().join("bad"), &["--labels", "food,music,sports"]);
    assert!(!out.status.success() && stderr(&out).contains("line 2") && stderr(&out).contains("`weather`"), "{}", stderr(&out));
    let out = run(llmfs(home.path()).args(["finetune", "classify", "--device", "cpu", "--model"]).arg(tiny_model_dir()).arg("--data").arg(&csv_path));
    assert!(!out.status.success() && stderr(&out).contains("no column `text`"), "{}", stderr(&out));
}
