//! `--precision bf16-mixed`: 50 steps of `finetune instruct` on the fixture records, on the tiny
//! GPT-2 and the tiny Llama, each step's training loss within 2 % (relative) of the same run in
//! f32; run.json says which path the products took. Every run is its own process: the products'
//! precision is process-wide.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// The training losses and run.json of a 50-step run (51 train records, batches of 2, 2 epochs).
fn run_with(home: &Path, model: &Path, precision: &str) -> (Vec<f64>, Value) {
    let run_dir = home.join(format!("run-{}-{precision}", model.file_name().unwrap().to_string_lossy()));
    let out = run(llmfs(home)
        .args(["finetune", "instruct", "--batch-size", "2", "--epochs", "2", "--lr", "1e-3", "--eval-every", "25", "--eval-batches", "1"])
        .args(["--sample-tokens", "2", "--plain", "--device", "cpu", "--threads", "2", "--precision", precision, "--model"])
        .arg(model)
        .arg("--data")
        .arg(fixtures().join("data/instruction_data_60.json"))
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let losses: Vec<f64> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["split"] == "train")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    let run_json: Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    (losses, run_json)
}

fn check(model: &Path) {
    let home = tempfile::tempdir().unwrap();
    let (f32_losses, f32_run) = run_with(home.path(), model, "f32");
    let (bf16_losses, bf16_run) = run_with(home.path(), model, "bf16-mixed");
    assert_eq!(f32_losses.len(), 50);
    assert_eq!(bf16_losses.len(), 50);
    assert_eq!(f32_run["matmul"], "f32");
    assert_eq!(bf16_run["config"]["train"]["precision"], "bf16-mixed");
    let worst = f32_losses.iter().zip(&bf16_losses).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);
    eprintln!("{}: bf16-mixed vs f32 training losses, largest relative difference {worst:.2e}", model.display());
    for (step, (a, b)) in f32_losses.iter().zip(&bf16_losses).enumerate() {
        assert!((a - b).abs() <= 0.02 * a.abs(), "{} step {}: bf16-mixed loss {b} vs f32 {a}", model.display(), step + 1);
    }
    match bf16_run["matmul"].as_str().unwrap() {
        // Rounded products change the losses (else the switch did nothing).
        "avx512-bf16" => assert_ne!(f32_losses, bf16_losses),
        other => {
            assert_eq!(other, "f32 (no AVX512-BF16)");
            eprintln!("note: this CPU has no AVX512-BF16: bf16-mixed ran the f32 products");
            assert_eq!(f32_losses, bf16_losses);
        }
    }
    // It learns either way.
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(mean(&bf16_losses[25..]) < mean(&bf16_losses[..25]) - 0.3, "{bf16_losses:?}");
}

#[test]
fn bf16_mixed_follows_f32_on_gpt2() {
    check(&tiny_model_dir());
}

#[test]
fn bf16_mixed_follows_f32_on_llama() {
    check(&fixtures().join("llama-tiny"));
}

#[test]
fn an_unknown_precision_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["finetune", "instruct", "--precision", "f16", "--model"]).arg(tiny_model_dir()));
    assert!(!out.status.success() && stderr(&out).contains("possible values: f32, bf16-mixed"), "{}", stderr(&out));
}
