//! `llmfs export`: a run (here the tiny fixture model) as an HF directory with tokenizer files;
//! transformers loads it with the same logits and tokens when a Python with it is at hand.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// A Python that has torch + transformers: $LLMFS_PYTHON, else the benchmark venv.
fn python_with_transformers() -> Option<PathBuf> {
    let candidates = std::env::var_os("LLMFS_PYTHON").map(PathBuf::from).into_iter().chain(
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/llmfs-torch-venv/bin/python")),
    );
    candidates.into_iter().find(|python| {
        Command::new(python).args(["-c", "import torch, transformers, safetensors"]).output().is_ok_and(|o| o.status.success())
    })
}

#[test]
fn export_writes_an_hf_directory_that_transformers_loads() {
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("exported");
    let out = run(llmfs(home.path()).args(["export", "--device", "cpu", "--model"]).arg(tiny_model_dir()).arg("--out").arg(&out_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    for file in ["config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        assert!(out_dir.join(file).is_file(), "{file}");
    }
    assert!(!home.path().join("exported.partial").exists());
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["n_embd"], 64);

    // A non-empty --out is refused without --force.
    let again = run(llmfs(home.path()).args(["export", "--device", "cpu", "--model"]).arg(tiny_model_dir()).arg("--out").arg(&out_dir));
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty") && stderr(&again).contains("--force"), "{}", stderr(&again));

    // The exported directory is a model llmfs loads with the fixture's logits.
    let text = "Every effort moves you forward, my friend.";
    let ids: Vec<u32> = gpt::Tokenizer::gpt2().encode(text);
    let logits = home.path().join("logits.safetensors");
    let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = run(llmfs(home.path()).args(["logits", "--device", "cpu", "--ids", &ids_arg, "--model"]).arg(&out_dir).arg("--out").arg(&logits));
    assert!(out.status.success(), "{}", stderr(&out));

    let Some(python) = python_with_transformers() else {
        eprintln!("skipped the transformers check: no Python with torch + transformers (set LLMFS_PYTHON)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/export_check.py");
    let check = Command::new(python).arg(script).arg(&out_dir).arg(text).arg(&logits).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let result: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    assert_eq!(result["ids"], serde_json::json!(ids), "the exported tokenizer tokenises like llmfs");
    assert_eq!(result["decoded"], text);
    assert_eq!(result["architecture"], "GPT2LMHeadModel");
    let diff = result["max_abs_diff"].as_f64().unwrap();
    assert!(diff < 1e-4, "transformers' logits differ from llmfs's by {diff}");
}
