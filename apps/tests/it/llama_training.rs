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

    // And the other way: an adapter PEFT wrote (no task type, alpha ≠ r) loads here with PEFT's logits.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/peft_make_adapter.py");
    let made = home.path().join("peft-made");
    let peft_logits = home.path().join("peft-made.safetensors");
    let check = Command::new(python_with("torch, transformers, peft").unwrap()).arg(script).arg(llama_tiny()).arg(&made).arg(ids).arg(&peft_logits).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let ours = logits(home.path(), &made, ids, &home.path().join("ours-of-peft-made.safetensors"));
    let bytes = std::fs::read(&peft_logits).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let theirs: Vec<f32> = st.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(max_abs_diff(&ours, &theirs) < 1e-4, "a PEFT-made adapter: llmfs's logits differ by {}", max_abs_diff(&ours, &theirs));
    assert!(max_abs_diff(&ours, &base) > 1e-2, "the PEFT-made adapter changes the model");
}

/// The spam splits of the fixture collection (`llmfs prepare spam`'s output).
fn spam_splits(dir: &Path) -> PathBuf {
    let splits = dir.join("spam");
    pipelines::data::spam::prepare_spam(fixtures().join("data/sms_spam_collection.zip").to_str().unwrap(), &splits, 123).unwrap();
    splits
}

#[test]
fn finetune_spam_trains_a_llama_family_classifier() {
    let home = tempfile::tempdir().unwrap();
    let data = spam_splits(home.path());
    let run_dir = home.path().join("cls");
    // The last layer, the final norm and the head train; the first layer runs once per text (the prefix cache).
    let out = run(llmfs(home.path())
        .args(["finetune", "spam", "--epochs", "3", "--max-length", "24", "--lr", "1e-3", "--json", "--plain", "--device", "cpu", "--model"])
        .arg(llama_tiny())
        .arg("--data")
        .arg(&data)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let report = last_json(&out);
    assert_eq!(report["length"], 24);
    assert!(stderr(&out).contains("cached the output of the 1 frozen blocks"), "{}", stderr(&out));
    // One layer: 2 norms (32 each) + attention (32·32 + 2·32·16 + 32·32) + MLP (3·32·96); final norm 32; head 2·32.
    assert_eq!(report["trainable_parameters"], 64 + 3_072 + 9_216 + 32 + 64);
    let losses = train_losses(&run_dir);
    assert!(losses[losses.len() - 1] < losses[0], "the loss did not fall: {losses:?}");

    let config: Value = serde_json::from_slice(&std::fs::read(run_dir.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(config["pad_token_id"], 128001, "texts are padded with the first EOS id (the tokenizer has no pad)");
    assert!(run_dir.join("model/tokenizer.json").is_file());

    // `eval spam` reads the texts as training did: the run's own test accuracy.
    let out = run(llmfs(home.path()).args(["eval", "spam", "--json", "--device", "cpu", "--model"]).arg(&run_dir).arg("--data").arg(&data));
    assert!(out.status.success(), "{}", stderr(&out));
    let eval = last_json(&out);
    assert!((eval["accuracy"].as_f64().unwrap() - report["test_accuracy"].as_f64().unwrap()).abs() < 1e-9, "{eval} vs {report}");
    let out = run(llmfs(home.path()).args(["classify", "--json", "--device", "cpu", "--text", "WINNER! Claim your free prize now", "--model"]).arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"label\""));

    // With LoRA on the attention projections: the adapters and the head train; the adapter
    // directory classifies like the merged model.
    let lora_dir = home.path().join("cls-lora");
    let out = run(llmfs(home.path())
        .args(["finetune", "spam", "--epochs", "1", "--max-length", "24", "--lr", "1e-3", "--json", "--plain", "--device", "cpu"])
        .args(["--lora-rank", "2", "--lora-targets", "attn", "--merge", "--model"])
        .arg(llama_tiny())
        .arg("--data")
        .arg(&data)
        .arg("--run-dir")
        .arg(&lora_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    // Per layer, rank 2: q 2·(32+32) + k 2·(32+16) + v 2·(32+16) + o 2·(32+32) = 448; head 2·32.
    assert_eq!(last_json(&out)["trainable_parameters"], 2 * 448 + 64);
    let adapter: Value = serde_json::from_slice(&std::fs::read(lora_dir.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter["task_type"], "SEQ_CLS");
    assert_eq!(adapter["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj"]));
    let classify = |model: &Path| {
        let out = run(llmfs(home.path()).args(["classify", "--json", "--device", "cpu", "--text", "Are we still on for dinner?", "--model"]).arg(model));
        assert!(out.status.success(), "{}", stderr(&out));
        let line: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        line["probability"].as_f64().unwrap()
    };
    let (merged, unmerged) = (classify(&lora_dir.join("model")), classify(&lora_dir.join("adapter")));
    assert!((merged - unmerged).abs() < 1e-5, "merged {merged} vs adapter {unmerged}");
}

/// 20 conversations (OpenAI's form): single exchanges with a system message and two-exchange
/// ones, 17 train / 1 validation / 2 test after the 85/10/5 split.
fn chat_data(dir: &Path) -> (PathBuf, Vec<Value>) {
    let conversations: Vec<Value> = (0..20)
        .map(|i| {
            let mut messages = vec![
                serde_json::json!({"role": "system", "content": "Answer with a number."}),
                serde_json::json!({"role": "user", "content": format!("What is {i} plus one?")}),
                serde_json::json!({"role": "assistant", "content": format!("{}", i + 1)}),
            ];
            if i % 2 == 1 {
                messages.push(serde_json::json!({"role": "user", "content": "And twice that?"}));
                messages.push(serde_json::json!({"role": "assistant", "content": format!("{}", 2 * (i + 1))}));
            }
            serde_json::json!({ "messages": messages })
        })
        .collect();
    let path = dir.join("chats.jsonl");
    std::fs::write(&path, conversations.iter().map(|c| format!("{c}\n")).collect::<String>()).unwrap();
    (path, conversations)
}

#[test]
fn finetune_instruct_on_chat_conversations_then_generate_responses_and_judge() {
    let home = tempfile::tempdir().unwrap();
    let run_dir = home.path().join("chat");
    let (data, conversations) = chat_data(home.path());
    let out = run(llmfs(home.path())
        .args(["finetune", "instruct", "--batch-size", "4", "--sample-tokens", "4", "--json", "--plain", "--device", "cpu"])
        .args(["--epochs", "3", "--lr", "3e-3", "--model"])
        .arg(fixtures().join("qwen3-tiny"))
        .arg("--data")
        .arg(&data)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("only the assistant turns in the loss"), "{}", stderr(&out));
    assert_eq!(last_json(&out)["steps"], 12, "17 training conversations, batches of 4, 3 epochs");
    let losses = train_losses(&run_dir);
    assert_eq!(losses.len(), 12);
    assert!(losses.iter().all(|l| l.is_finite()) && losses[11] < losses[0] - 1.0, "the loss did not fall: {losses:?}");

    // The splits are kept as conversations, in file order: the test split is the last two.
    let lines = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(run_dir.join("data").join(name)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert_eq!(lines("train.jsonl"), conversations[..17]);
    assert_eq!(lines("test.jsonl"), conversations[17..19]);
    assert_eq!(lines("validation.jsonl"), conversations[19..]);
    assert!(!run_dir.join("data/test.json").exists());
    let run_json: Value = serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    let details = &run_json["config"]["details"];
    assert_eq!((details["prompt_format"].as_str(), details["train_on"].as_str()), (Some("chat"), Some("assistant")));
    assert_eq!(details["collate"]["mask_prompt"], true);
    // The per-epoch sample answers the validation conversation rendered with the template.
    let sample: Value = serde_json::from_str(std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    let prompt = sample["prompt"].as_str().unwrap_or_default();
    assert!(prompt.ends_with("<|im_start|>user\nAnd twice that?<|im_end|>\n<|im_start|>assistant\n"), "{sample}");

    // generate-responses on the run's chat test split: the reference is the last assistant turn.
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
    let written: Value = serde_json::from_slice(&std::fs::read(&responses).unwrap()).unwrap();
    assert_eq!(written[0]["output"], "36", "conversation 17's last assistant turn");
    assert_eq!(written[0]["instruction"], "And twice that?");
    assert_eq!(written[0]["messages"].as_array().unwrap().len(), 4, "the conversation before its last assistant turn");
    assert_eq!(written[1]["output"], "19");

    // eval judge reads them back and asks about the conversation.
    let server = crate::common_http::Server::start_fn(|request| {
        let prompt = request.json()["messages"][0]["content"].as_str().unwrap_or("").to_string();
        let score = if prompt.contains("user: What is 17 plus one?\n\nassistant: 18\n\nuser: And twice that?") { "80" } else { "20" };
        crate::common_http::Reply::Ok(serde_json::json!({ "message": { "role": "assistant", "content": score }, "done": true }).to_string().into_bytes())
    });
    let out = run(llmfs(home.path()).args(["eval", "judge", "--judge-url", &server.base, "--json", "--responses"]).arg(&responses));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out), serde_json::json!({ "mean_score": 50.0, "scored": 2, "unparseable": 0 }));
}

/// `--chat-template FILE` renders the conversations in training, and the trained model keeps it
/// (`model/chat_template.jinja`), so that chat, serve and generate-responses render as training did.
#[test]
fn a_chat_template_given_in_training_stays_with_the_model() {
    let home = tempfile::tempdir().unwrap();
    let (data, _) = chat_data(home.path());
    let template = "{% for m in messages %}<<{{ m.role }}>> {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}";
    let template_file = home.path().join("mine.jinja");
    std::fs::write(&template_file, template).unwrap();
    let run_dir = home.path().join("run");
    let out = run(llmfs(home.path())
        .args(["finetune", "instruct", "--batch-size", "4", "--sample-tokens", "2", "--plain", "--device", "cpu", "--epochs", "1", "--model"])
        .arg(llama_tiny())
        .arg("--data")
        .arg(&data)
        .arg("--chat-template")
        .arg(&template_file)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let sample: Value = serde_json::from_str(std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert!(sample["prompt"].as_str().unwrap_or_default().ends_with("<<user>> And twice that?<|eot_id|><<assistant>> "), "{sample}");
    assert_eq!(std::fs::read_to_string(run_dir.join("model/chat_template.jinja")).unwrap(), template);
    let tokenizer = gpt::Tokenizer::from_model_dir(&run_dir.join("model")).unwrap();
    assert_eq!(tokenizer.chat_template().map(|t| t.source()), Some(template), "the model's own template is the one trained with");
}
