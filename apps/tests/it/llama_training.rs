//! Training a Llama-family model (the tiny Llama 3 fixture, with its real tokenizer) end to end:
//! `finetune instruct` in full and with LoRA on the `q_proj` … `down_proj` projections, the
//! adapters in PEFT's layout (checked against PEFT when a Python with it is at hand), and the
//! runs used as `--model` by `logits` and `generate-responses`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

fn llama_tiny() -> PathBuf {
    fixtures().join("llama-tiny")
}

/// The first 20 of the fixture's instruction records: 17 train / 1 validation / 2 test.
fn small_data(dir: &Path) -> PathBuf {
    let records: Vec<Value> = serde_json::from_slice(&std::fs::read(fixtures().join("data/instruction_data_60.json")).unwrap()).unwrap();
    let path = dir.join("instructions.json");
    std::fs::write(&path, serde_json::to_vec(&records[..20]).unwrap()).unwrap();
    path
}

fn finetune(home: &Path, run_dir: &Path, flags: &[&str]) -> std::process::Output {
    run(llmfs(home)
        .args(["finetune", "instruct", "--batch-size", "4", "--sample-tokens", "4", "--json", "--plain", "--device", "cpu"])
        .args(flags)
        .arg("--model")
        .arg(llama_tiny())
        .arg("--data")
        .arg(small_data(home))
        .arg("--run-dir")
        .arg(run_dir))
}

fn train_losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["split"] == "train")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn finetune_instruct_trains_a_llama_family_model() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("full");
    let out = finetune(home.path(), &run_dir, &["--epochs", "3", "--lr", "3e-3", "--mask-prompt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["steps"], 12, "17 training records, batches of 4 (the short one dropped), 3 epochs");
    let losses = train_losses(&run_dir);
    assert_eq!(losses.len(), 12);
    // A random 2-layer model over a 128k vocabulary (12.5 here) learns the responses it sees three times.
    assert!(losses[0] > 11.0, "first loss {}", losses[0]);
    assert!(losses[11] < losses[0] - 2.0, "the loss fell by less than 2: {losses:?}");

    // The run's model is a Llama with its tokenizer beside it: `--model RUN` works everywhere.
    let config: Value = serde_json::from_slice(&std::fs::read(run_dir.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    for file in ["model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(run_dir.join("model").join(file).is_file(), "{file}");
    }
    let run_json: Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["config"]["architecture"], "LlamaForCausalLM");
    assert_eq!(run_json["config"]["details"]["end_token"], 128001, "examples end with the tokenizer's first EOS id");
    let samples = std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 3, "one sample per epoch");

    // Prompts are encoded as the fine-tuning encoded them: Llama 3's tokenizer starts with BOS.
    let ids = "128000,11769,5149,11031,499";
    let trained = logits(home.path(), &run_dir, ids, &home.path().join("trained.safetensors"));
    let base = logits(home.path(), &llama_tiny(), ids, &home.path().join("base.safetensors"));
    assert!(max_abs_diff(&trained, &base) > 1e-2, "training moved nothing");
    let responses = home.path().join("responses.json");
    let out = run(llmfs(home.path())
        .args(["generate-responses", "--max-new-tokens", "4", "--json", "--device", "cpu", "--model"])
        .arg(&run_dir)
        .arg("--data")
        .arg(&run_dir)
        .arg("--out")
        .arg(&responses));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["records"], 2);
}

#[test]
fn lora_on_a_llama_family_model_saves_peft_adapters() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("lora");
    let out = finetune(home.path(), &run_dir, &["--epochs", "2", "--lr", "1e-2", "--lora-rank", "4", "--lora-targets", "all", "--merge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    // Per layer (hidden 32, 4 heads × 8 = 32, 2 KV heads × 8 = 16, MLP 96), rank 4:
    // q 4·(32+32) + k 4·(32+16) + v 4·(32+16) + o 4·(32+32) + gate 4·(32+96) + up 4·(32+96) + down 4·(96+32)
    // = 256 + 192 + 192 + 256 + 512 + 512 + 512 = 2,432; two layers.
    assert_eq!(report["trainable_parameters"], 2 * 2_432);
    let err = stderr(&out);
    assert!(err.contains("LoRA r=4 alpha=4 on q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"), "{err}");

    let adapter = run_dir.join("adapter");
    let config: Value = serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]));
    assert_eq!(config["fan_in_fan_out"], false, "nn.Linear weights are [out, in]");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    let bytes = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.len(), 2 * 7 * 2);
    let shape = |name: &str| tensors.tensor(&format!("base_model.model.model.layers.1.{name}.weight")).unwrap().shape().to_vec();
    assert_eq!(shape("self_attn.q_proj.lora_A"), [4, 32]);
    assert_eq!(shape("self_attn.k_proj.lora_B"), [16, 4]);
    assert_eq!(shape("mlp.down_proj.lora_A"), [4, 96]);
    assert_eq!(shape("mlp.down_proj.lora_B"), [32, 4]);

    // The adapter (attached to its base) and the merged model give the same logits.
    let ids = "128000,11769,5149,11031,499";
    let unmerged = logits(home.path(), &adapter, ids, &home.path().join("adapter.safetensors"));
    let merged = logits(home.path(), &run_dir.join("model"), ids, &home.path().join("merged.safetensors"));
    let base = logits(home.path(), &llama_tiny(), ids, &home.path().join("base.safetensors"));
    assert!(max_abs_diff(&unmerged, &merged) < 1e-4, "adapter vs merged: {}", max_abs_diff(&unmerged, &merged));
    assert!(max_abs_diff(&unmerged, &base) > 1e-3, "training moved nothing");

    // GPT-2's module names are not a Llama's projections.
    let out = finetune(home.path(), &home.path().join("bad"), &["--lora-rank", "4", "--lora-targets", "c_attn"]);
    assert!(!out.status.success() && stderr(&out).contains("not projections of a Llama-family model"), "{}", stderr(&out));

    let Some(python) = python_with("torch, transformers, peft") else {
        eprintln!("skipped the PEFT check: no Python with torch + transformers + peft (set LLMFS_PYTHON)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/lora_peft_check.py");
    let check = Command::new(python).arg(script).arg(&adapter).arg(ids).arg(home.path().join("adapter.safetensors")).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let result: Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    assert!(result["max_abs_diff"].as_f64().unwrap() < 1e-4, "PEFT's logits differ from llmfs's: {result}");
    assert!(result["merged_max_abs_diff"].as_f64().unwrap() < 1e-4, "{result}");
    assert_eq!(result["lora_parameters"], report["trainable_parameters"]);
}
