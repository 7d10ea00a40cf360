//! `llmfs export`: a run (here the tiny fixture model) as an HF directory with tokenizer files;
//! transformers loads it with the same logits and tokens when a Python with it is at hand. And
//! a LoRA run's adapters: merged, unmerged, and through PEFT when it is installed.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

#[test]
fn a_lora_run_loads_unmerged_merged_and_in_peft() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("lora");
    let flags = ["--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--sample-tokens", "4", "--json"];
    let out = run(finetune_instruct(home.path(), &run_dir, false, &flags).args(["--lora-rank", "4", "--lora-targets", "attn", "--merge"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["trainable_parameters"], 2 * (4 * (64 + 192) + 4 * (64 + 64)), "adapters on 2 blocks' attention only");
    assert!(stderr(&out).contains("LoRA r=4 alpha=4 on attn.c_attn,attn.c_proj"), "{}", stderr(&out));
    assert!(run_dir.join("adapter/adapter_model.safetensors").is_file() && run_dir.join("model/model.safetensors").is_file());

    let ids = "464,1110,286,262,3290,373,1588,13";
    let adapter = logits(home.path(), &run_dir.join("adapter"), ids, &home.path().join("adapter.safetensors"));
    let merged = logits(home.path(), &run_dir.join("model"), ids, &home.path().join("merged.safetensors"));
    let base = logits(home.path(), &tiny_model_dir(), ids, &home.path().join("base.safetensors"));
    assert!(max_abs_diff(&adapter, &merged) < 1e-5, "adapter vs merged: {}", max_abs_diff(&adapter, &merged));
    assert!(max_abs_diff(&adapter, &base) > 1e-3, "training moved nothing: {}", max_abs_diff(&adapter, &base));

    // The other LoRA flags need a rank; --trainable and LoRA exclude each other.
    let out = run(&mut finetune_instruct(home.path(), &home.path().join("x"), false, &["--lora-alpha", "8"]));
    assert!(!out.status.success() && stderr(&out).contains("need --lora-rank"), "{}", stderr(&out));
    let out = run(&mut finetune_instruct(home.path(), &home.path().join("y"), false, &["--lora-rank", "0"]));
    assert!(!out.status.success() && stderr(&out).contains("at least 1"), "{}", stderr(&out));

    let Some(python) = python_with("torch, transformers, peft") else {
        eprintln!("skipped the PEFT check: no Python with torch + transformers + peft (set LLMFS_PYTHON)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/lora_peft_check.py");
    let check = Command::new(python).arg(script).arg(run_dir.join("adapter")).arg(ids).arg(home.path().join("adapter.safetensors")).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let result: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    assert!(result["max_abs_diff"].as_f64().unwrap() < 1e-4, "PEFT's logits differ from llmfs's: {result}");
    assert!(result["merged_max_abs_diff"].as_f64().unwrap() < 1e-4, "{result}");
    assert_eq!(result["lora_parameters"], report["trainable_parameters"]);
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

    let Some(python) = python_with("torch, transformers, safetensors") else {
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

#[test]
fn llama_family_exports_round_trip_with_their_tokenizer() {
    for name in ["llama-tiny", "qwen3-tiny"] {
        let home = tempfile::tempdir().unwrap();
        let source = fixtures().join(name);
        let out_dir = home.path().join("exported");
        let out = run(llmfs(home.path()).args(["export", "--device", "cpu", "--model"]).arg(&source).arg("--out").arg(&out_dir));
        assert!(out.status.success(), "{}", stderr(&out));
        for file in ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
            assert!(out_dir.join(file).is_file(), "{name}: {file}");
        }
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("config.json")).unwrap()).unwrap();
        let source_config: serde_json::Value = serde_json::from_slice(&std::fs::read(source.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["dtype"], "float32", "{name}: the weights are written in f32");
        for key in ["architectures", "rope_parameters", "eos_token_id", "tie_word_embeddings", "head_dim", "transformers_version"] {
            assert_eq!(config[key], source_config[key], "{name}: {key} kept");
        }
        let generation: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("generation_config.json")).unwrap()).unwrap();
        assert_eq!(generation["eos_token_id"], source_config["eos_token_id"], "{name}");

        // llmfs reads the export back with the fixture's logits (transformers' to 1e-4).
        let text = "Every effort moves you forward, my friend.";
        let tokenizer = gpt::Tokenizer::from_model_dir(&out_dir).unwrap();
        let ids = tokenizer.try_encode(text).unwrap();
        let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let logits_of = |model: &std::path::Path, file: &str| logits(home.path(), model, &ids_arg, &home.path().join(file));
        let (exported, original) = (logits_of(&out_dir, "exported.safetensors"), logits_of(&source, "original.safetensors"));
        let diff = max_abs_diff(&exported, &original);
        // bf16 weights widened to f32 and written as f32: the same numbers.
        assert!(diff == 0.0, "{name}: the export's logits differ by {diff}");

        let Some(python) = python_with("torch, transformers, safetensors") else {
            eprintln!("skipped the transformers check: no Python with torch + transformers (set LLMFS_PYTHON)");
            continue;
        };
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/export_check.py");
        let check = Command::new(python).arg(script).arg(&out_dir).arg(text).arg(home.path().join("exported.safetensors")).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        let result: serde_json::Value = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
        assert_eq!(result["ids"], serde_json::json!(ids), "{name}: the exported tokenizer tokenises like llmfs");
        assert_eq!(result["architecture"], source_config["architectures"][0]);
        let diff = result["max_abs_diff"].as_f64().unwrap();
        assert!(diff < 1e-4, "{name}: transformers' logits differ from llmfs's by {diff}");
    }
}

/// A Llama-family classifier run (LoRA adapters here) exports as `LlamaForSequenceClassification`
/// with the adapters folded in: llmfs and transformers (when at hand) give its probabilities. A
/// GPT-2 classifier is refused with the reason.
#[test]
fn a_llama_family_classifier_exports_for_sequence_classification() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("spam");
    pipelines::data::spam::prepare_spam(fixtures().join("data/sms_spam_collection.zip").to_str().unwrap(), &data, 123).unwrap();
    let finetune = |model: &std::path::Path, run_dir: &std::path::Path| {
        run(llmfs(home.path())
            .args(["finetune", "spam", "--epochs", "1", "--max-length", "24", "--lr", "1e-3", "--plain", "--device", "cpu", "--lora-rank", "2", "--model"])
            .arg(model)
            .arg("--data")
            .arg(&data)
            .arg("--run-dir")
            .arg(run_dir))
    };
    let run_dir = home.path().join("cls");
    let out = finetune(&fixtures().join("llama-tiny"), &run_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let out_dir = home.path().join("exported");
    let out = run(llmfs(home.path()).args(["export", "--device", "cpu", "--model"]).arg(&run_dir).arg("--out").arg(&out_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("ForSequenceClassification, 2 classes"), "{}", stderr(&out));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "spam");
    assert!(out_dir.join("tokenizer.json").is_file());

    let text = "WINNER! Claim your free prize now";
    let probability = |model: &std::path::Path| {
        let out = run(llmfs(home.path()).args(["classify", "--json", "--device", "cpu", "--text", text, "--model"]).arg(model));
        assert!(out.status.success(), "{}", stderr(&out));
        let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        line["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect::<Vec<_>>()
    };
    let (trained, exported) = (probability(&run_dir), probability(&out_dir));
    assert!(trained.iter().zip(&exported).all(|(a, b)| (a - b).abs() < 1e-5), "{trained:?} vs {exported:?}");

    let gpt2_run = home.path().join("gpt2-cls");
    assert!(finetune(&tiny_model_dir(), &gpt2_run).status.success());
    let out = run(llmfs(home.path()).args(["export", "--device", "cpu", "--model"]).arg(&gpt2_run).arg("--out").arg(home.path().join("gpt2-exported")));
    assert!(!out.status.success() && stderr(&out).contains("GPT-2 classifier") && stderr(&out).contains("bias"), "{}", stderr(&out));

    let Some(python) = python_with("torch, transformers") else {
        eprintln!("skipped the transformers check: no Python with torch + transformers (set LLMFS_PYTHON)");
        return;
    };
    let script = "import sys, json, torch\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\
        m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()\nt = AutoTokenizer.from_pretrained(sys.argv[1])\n\
        with torch.no_grad():\n    p = m(**t(sys.argv[2], return_tensors='pt')).logits.softmax(-1)[0]\nprint(json.dumps(p.tolist()))";
    let check = Command::new(python).args(["-c", script]).arg(&out_dir).arg(text).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let reference: Vec<f64> = serde_json::from_slice(check.stdout.trim_ascii()).unwrap();
    assert!(reference.iter().zip(&exported).all(|(a, b)| (a - b).abs() < 1e-4), "transformers {reference:?} vs llmfs {exported:?}");
}
