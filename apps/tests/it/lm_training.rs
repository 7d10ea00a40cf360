//! The language-model training commands end to end, offline, with the tiny fixture model:
//! `finetune instruct` then `generate-responses` on its run, and `prepare fineweb` then `pretrain`.

use crate::common::*;
use serde_json::Value;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn finetune_instruct_then_generate_responses_on_the_run() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("run");
    let out = run(llmfs(home.path())
        .args(["finetune", "instruct", "--epochs", "1", "--batch-size", "4", "--eval-every", "6", "--eval-batches", "1"])
        .args(["--sample-tokens", "6", "--mask-prompt", "--json", "--plain", "--device", "cpu"])
        .arg("--model")
        .arg(tiny_model_dir())
        .arg("--data")
        .arg(fixtures().join("data/instruction_data_60.json"))
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["steps"], 12, "51 training records in batches of 4");
    assert!(report["validation_loss"].as_f64().unwrap().is_finite());
    let err = stderr(&out);
    assert!(err.contains("51 train / 3 validation / 6 test") && err.contains("prompt masked"), "{err}");
    let metrics = events(&run_dir.join("metrics.jsonl"));
    assert_eq!(metrics.iter().filter(|e| e["split"] == "train").count(), 12);
    assert!(metrics.iter().any(|e| e["split"] == "val" && e["step"] == 6 && e["perplexity"].is_number()));
    assert_eq!(events(&run_dir.join("samples.jsonl")).len(), 1, "one sample per epoch");
    for file in ["model/config.json", "model/model.safetensors", "data/test.json", "plots/loss.png", "eval/validation.json"] {
        assert!(run_dir.join(file).is_file(), "{file}");
    }

    // generate-responses takes the run as the model and its kept test split as the data.
    let responses = home.path().join("responses.json");
    let out = run(llmfs(home.path())
        .args(["generate-responses", "--max-new-tokens", "5", "--json", "--device", "cpu", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&run_dir)
        .arg("--out")
        .arg(&responses));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["records"], 6);
}

#[test]
fn prepare_fineweb_then_pretrain() {
    let home = tempfile::tempdir().unwrap();
    let shards = home.path().join("shards");
    let out = run(llmfs(home.path())
        .args(["prepare", "fineweb", "--shard-size", "20000", "--json", "--input"])
        .arg(fixtures().join("data/fineweb_edu_sample.parquet"))
        .arg("--out")
        .arg(&shards));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(shards.join("edufineweb_val_000000.npy").is_file() && shards.join("edufineweb_train_000001.npy").is_file());

    let run_dir = home.path().join("run");
    let pretrain = |extra: &[&str]| {
        run(llmfs(home.path())
            .args(["pretrain", "--seq-len", "32", "--batch-size", "4", "--total-batch", "256", "--steps", "4", "--warmup-steps", "1"])
            .args(["--eval-every", "2", "--eval-batches", "1", "--sample-every", "2", "--sample-tokens", "4", "--hellaswag-every", "4"])
            .args(["--hellaswag-limit", "4", "--plain", "--json", "--device", "cpu"])
            .args(extra)
            .arg("--init")
            .arg(tiny_model_dir())
            .arg("--hellaswag-data")
            .arg(fixtures().join("data/hellaswag_val_40.jsonl"))
            .arg("--data")
            .arg(&shards)
            .arg("--run-dir")
            .arg(&run_dir))
    };
    // Stopped after 3 steps, then resumed to the end.
    let out = pretrain(&["--max-steps", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));
    let out = pretrain(&["--resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["steps"], 4);
    let err = stderr(&out);
    assert!(err.contains("256 tokens a step (4 × 32 × 2 accumulated)"), "{err}");
    let metrics = events(&run_dir.join("metrics.jsonl"));
    assert_eq!(metrics.iter().filter(|e| e["split"] == "train").count(), 8, "2 micro-batches a step");
    let hellaswag: Vec<&Value> = metrics.iter().filter(|e| e["split"] == "hellaswag").collect();
    assert_eq!(hellaswag.len(), 1);
    assert_eq!(hellaswag[0]["step"], 4);
    assert_eq!(hellaswag[0]["n"], 4);
    let samples: Vec<u64> = events(&run_dir.join("samples.jsonl")).iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(samples, [2, 4]);

    // Asking for a total batch that micro-batches cannot make is a clear error.
    let out = run(llmfs(home.path()).args(["pretrain", "--seq-len", "32", "--batch-size", "4", "--total-batch", "1000"]).arg("--data").arg(&shards));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--total-batch 1000"), "{}", stderr(&out));
}
