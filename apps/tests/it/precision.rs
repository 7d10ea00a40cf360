//! `--precision bf16-mixed` and `f16-mixed`: 50 steps of `finetune instruct` on the fixture
//! records, on the tiny GPT-2 and the tiny Llama, each step's training loss within 2 % (relative)
//! of the same run in f32; run.json says which path the products took. f16-mixed's loss scaling:
//! a step whose loss is made infinite (`LLMFS_TEST_INF_LOSS_AT_STEP`) is skipped and halves the
//! scale, and a resumed run continues with the scaler's state, bit for bit. Every run is its own
//! process: the products' precision is process-wide.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// What run.json says about f16-mixed's products.
const F16_PATH: &str = "f16 (emulated: f16-rounded inputs, f32 GEMM)";

/// The events of `split` in a run's metrics.jsonl.
fn events(run_dir: &Path, split: &str) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["split"] == split)
        .collect()
}

fn losses(train: &[Value]) -> Vec<f64> {
    train.iter().map(|e| e["loss"].as_f64().unwrap()).collect()
}

/// The training events and run.json of a 50-step run (51 train records, batches of 2, 2 epochs).
fn run_with(home: &Path, model: &Path, precision: &str) -> (Vec<Value>, Value) {
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
    let run_json: Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    (events(&run_dir, "train"), run_json)
}

fn check(model: &Path, precision: &str) {
    let home = tempfile::tempdir().unwrap();
    let (f32_train, f32_run) = run_with(home.path(), model, "f32");
    let (mixed_train, mixed_run) = run_with(home.path(), model, precision);
    let (f32_losses, mixed_losses) = (losses(&f32_train), losses(&mixed_train));
    assert_eq!(f32_losses.len(), 50);
    assert_eq!(mixed_losses.len(), 50);
    assert_eq!(f32_run["matmul"], "f32");
    assert_eq!(mixed_run["config"]["train"]["precision"], precision);
    let worst = f32_losses.iter().zip(&mixed_losses).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);
    eprintln!("{}: {precision} vs f32 training losses, largest relative difference {worst:.2e}", model.display());
    for (step, (a, b)) in f32_losses.iter().zip(&mixed_losses).enumerate() {
        assert!((a - b).abs() <= 0.02 * a.abs(), "{} step {}: {precision} loss {b} vs f32 {a}", model.display(), step + 1);
    }
    match mixed_run["matmul"].as_str().unwrap() {
        // Rounded products change the losses (else the switch did nothing).
        // "avx512-bf16" may say why not AMX on a CPU that has it.
        path if path == "amx-bf16" || path.starts_with("avx512-bf16") || path == F16_PATH => assert_ne!(f32_losses, mixed_losses),
        other => {
            assert_eq!(other, "f32 (no AVX512-BF16)");
            eprintln!("note: this CPU has no AVX512-BF16: bf16-mixed ran the f32 products");
            assert_eq!(f32_losses, mixed_losses);
        }
    }
    // Only f16 scales the loss: by torch's initial 2^16 throughout (no step of these overflows).
    assert!(f32_train.iter().all(|e| e.get("loss_scale").is_none()));
    let scales: Vec<Option<f64>> = mixed_train.iter().map(|e| e["loss_scale"].as_f64()).collect();
    let want = if precision == "f16-mixed" { Some(65536.0) } else { None };
    assert!(scales.iter().all(|&s| s == want), "{scales:?}");
    assert!(mixed_train.iter().all(|e| e.get("step_skipped").is_none()));
    // It learns either way.
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(mean(&mixed_losses[25..]) < mean(&mixed_losses[..25]) - 0.3, "{mixed_losses:?}");
}

#[test]
fn bf16_mixed_follows_f32_on_gpt2() {
    check(&tiny_model_dir(), "bf16-mixed");
}

#[test]
fn bf16_mixed_follows_f32_on_llama() {
    check(&fixtures().join("llama-tiny"), "bf16-mixed");
}

#[test]
fn f16_mixed_follows_f32_on_gpt2() {
    check(&tiny_model_dir(), "f16-mixed");
}

#[test]
fn f16_mixed_follows_f32_on_llama() {
    check(&fixtures().join("llama-tiny"), "f16-mixed");
}

/// `finetune instruct --precision f16-mixed` of the tiny GPT-2, a checkpoint after every step,
/// stopped after `max_steps` (else the 25 steps of one epoch), the loss of step `inf_at` made
/// infinite before backward.
fn f16_run(home: &Path, run_dir: &Path, resume: bool, max_steps: Option<usize>, inf_at: Option<usize>) -> std::process::Output {
    let max_steps = max_steps.map(|n| n.to_string());
    let mut flags = vec!["--batch-size", "2", "--epochs", "1", "--lr", "1e-3", "--eval-every", "100", "--eval-batches", "1"];
    flags.extend(["--sample-tokens", "2", "--checkpoint-every", "1", "--precision", "f16-mixed"]);
    if let Some(n) = &max_steps {
        flags.extend(["--max-steps", n.as_str()]);
    }
    let mut cmd = finetune_instruct(home, run_dir, resume, &flags);
    if let Some(step) = inf_at {
        cmd.env("LLMFS_TEST_INF_LOSS_AT_STEP", step.to_string());
    }
    run(&mut cmd)
}

/// The loss scaler's state in checkpoint `step`'s entry of state.json: (scale, growth tracker).
fn saved_scaler(run_dir: &Path, step: u64) -> (f64, u64) {
    let states: Value = serde_json::from_slice(&std::fs::read(run_dir.join("checkpoints/state.json")).unwrap()).unwrap();
    let state = states.as_array().unwrap().iter().find(|s| s["step"] == step).unwrap_or_else(|| panic!("no checkpoint {step}: {states}"));
    (state["loss_scaler"]["scale"].as_f64().unwrap(), state["loss_scaler"]["growth_tracker"].as_u64().unwrap())
}

#[test]
fn an_infinite_loss_skips_its_step_and_halves_the_scale() {
    let home = tempfile::tempdir().unwrap();
    let (skipping, plain) = (home.path().join("skipping"), home.path().join("plain"));
    let out = f16_run(home.path(), &skipping, false, Some(3), Some(3));
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    let out = f16_run(home.path(), &plain, false, Some(3), None);
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    let read = |run_dir: &Path, name: &str| std::fs::read(run_dir.join("checkpoints").join(name)).unwrap();

    // The skipped step changed nothing: the weights and AdamW's moments and step count after it
    // are those after step 2 (one process's records: the same parameter ids), where the run
    // without the inf moved on.
    assert!(read(&skipping, "model-3.bpk") == read(&skipping, "model-2.bpk"), "the skipped step changed the weights");
    assert!(read(&skipping, "optim-3.bpk") == read(&skipping, "optim-2.bpk"), "the skipped step changed AdamW's state");
    assert!(read(&plain, "model-3.bpk") != read(&plain, "model-2.bpk"), "step 3 of the run without the inf changes the weights");
    assert!(read(&plain, "optim-3.bpk") != read(&plain, "optim-2.bpk"));
    // The losses are the same until then (the inf is only in backward): both runs had the same
    // weights after step 2.
    assert_eq!(losses(&events(&skipping, "train")), losses(&events(&plain, "train")));
    // The scale halved and its count of good steps restarted.
    assert_eq!(saved_scaler(&skipping, 2), (65536.0, 2));
    assert_eq!(saved_scaler(&skipping, 3), (32768.0, 0));
    assert_eq!(saved_scaler(&plain, 3), (65536.0, 3));

    // Resumed (without the inf) for two more steps: they train at the halved scale.
    let out = f16_run(home.path(), &skipping, true, Some(5), None);
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    let train = events(&skipping, "train");
    let scales: Vec<f64> = train.iter().map(|e| e["loss_scale"].as_f64().unwrap()).collect();
    assert_eq!(scales, [65536.0, 65536.0, 65536.0, 32768.0, 32768.0]);
    let skipped: Vec<u64> = train.iter().filter(|e| e["step_skipped"] == true).map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(skipped, [3]);
    assert!(read(&skipping, "model-4.bpk") != read(&skipping, "model-3.bpk"), "step 4 trains");
}

/// A run stopped after step 6 and resumed ends with the weights, losses and loss scales of the
/// run that was not stopped, bit for bit; the scale was halved at step 2, so the resumed run must
/// take it from the checkpoint (a fresh scaler would start at 2^16 again).
#[test]
fn a_resumed_f16_mixed_run_continues_bit_identically() {
    let home = tempfile::tempdir().unwrap();
    let (whole, stopped) = (home.path().join("whole"), home.path().join("stopped"));
    let out = f16_run(home.path(), &whole, false, None, Some(2));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f16_run(home.path(), &stopped, false, Some(6), Some(2));
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    assert_eq!(saved_scaler(&stopped, 6), (32768.0, 4));
    let out = f16_run(home.path(), &stopped, true, None, Some(2));
    assert!(out.status.success(), "{}", stderr(&out));

    assert!(
        std::fs::read(stopped.join("model/model.safetensors")).unwrap() == std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        "the resumed run's weights differ from the uninterrupted run's"
    );
    let curve = |run_dir: &Path| -> Vec<(u64, f64, f64, bool)> {
        let train = events(run_dir, "train");
        train.iter().map(|e| (e["step"].as_u64().unwrap(), e["loss"].as_f64().unwrap(), e["loss_scale"].as_f64().unwrap(), e["step_skipped"] == true)).collect()
    };
    let (resumed, uninterrupted) = (curve(&stopped), curve(&whole));
    assert_eq!(resumed.len(), 25);
    assert_eq!(resumed, uninterrupted);
    assert_eq!(uninterrupted[1].2, 65536.0);
    assert!(uninterrupted[1].3 && uninterrupted[2..].iter().all(|&(_, _, scale, skipped)| scale == 32768.0 && !skipped));
}

#[test]
fn an_unknown_precision_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["finetune", "instruct", "--precision", "f16", "--model"]).arg(tiny_model_dir()));
    assert!(!out.status.success() && stderr(&out).contains("possible values: f32, bf16-mixed, f16-mixed"), "{}", stderr(&out));
}
