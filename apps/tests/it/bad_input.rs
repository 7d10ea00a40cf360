//! The bad-input sweep through the real binary: every file the CLI reads, made empty, cut short,
//! non-UTF-8, of the wrong type or one huge line, gives exit code 1 and an error that names the
//! file — never a panic (exit 101), never a hang. The readers' own fuzzing is in the proptest
//! targets; this checks the whole path from the command line to the message.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Ways to spoil a valid file.
fn variants(valid: &[u8], text: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("empty", Vec::new()), ("truncated", valid[..valid.len() / 2].to_vec())];
    let mut garbled = valid.to_vec();
    garbled.splice(valid.len() / 3..valid.len() / 3, [0xff, 0xfe, 0x00, 0xc3]);
    out.push(("non-UTF-8 / garbled", garbled));
    if text {
        // One 16 MiB line with no newline: read and rejected, not split or held twice.
        out.push(("one huge line", vec![b'x'; 16 << 20]));
        out.push(("wrong types", wrong_types(valid)));
    } else {
        out.push(("garbage", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()));
    }
    out
}

/// The same records with every string value a number (JSON, JSON lines), or with letters where
/// numbers belong (CSV labels).
fn wrong_types(valid: &[u8]) -> Vec<u8> {
    fn numbers_for_strings(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(_) => Value::from(7),
            Value::Array(items) => Value::Array(items.into_iter().map(numbers_for_strings).collect()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, numbers_for_strings(v))).collect()),
            other => other,
        }
    }
    let text = String::from_utf8_lossy(valid);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return numbers_for_strings(value).to_string().into_bytes();
    }
    let lines: Option<Vec<String>> =
        text.lines().map(|l| serde_json::from_str(l).ok().map(|v| numbers_for_strings(v).to_string())).collect();
    match lines {
        Some(lines) => lines.join("\n").into_bytes(),
        None => text.replace(['0', '1'], "x").into_bytes(),
    }
}

/// Runs `command` (which reads `file`) for every spoilt version of `valid` and checks the outcome.
fn sweep(what: &str, file: &Path, valid: &[u8], text: bool, command: impl Fn() -> Command) -> usize {
    sweep_allowing(what, file, valid, text, &[], command)
}

/// [`sweep`], where the `valid_anyway` variants may also succeed (a CSV cut in the middle of a
/// line is a shorter CSV: nothing in it says it was cut).
fn sweep_allowing(what: &str, file: &Path, valid: &[u8], text: bool, valid_anyway: &[&str], command: impl Fn() -> Command) -> usize {
    let mut cases = 0;
    for (variant, bytes) in variants(valid, text) {
        std::fs::write(file, &bytes).unwrap();
        let out = command().output().expect("llmfs runs");
        let err = String::from_utf8_lossy(&out.stderr);
        cases += 1;
        if valid_anyway.contains(&variant) && out.status.success() {
            continue;
        }
        let name = file.file_name().unwrap().to_string_lossy();
        assert_eq!(out.status.code(), Some(1), "{what}, {variant}: exit code {:?}: {err}", out.status.code());
        assert!(!err.contains("panicked"), "{what}, {variant} panicked: {err}");
        assert!(err.contains(name.as_ref()), "{what}, {variant}: the error does not name {name}: {err}");
        assert!(err.len() < 4096, "{what}, {variant}: a {}-byte error (echoing the input?)", err.len());
    }
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn every_input_file_fails_cleanly_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let cmd = |args: &[&str]| {
        let mut c = llmfs(home);
        c.args(args).args(["--device", "cpu"]);
        c
    };
    let tiny = tiny_model_dir();
    let tiny = tiny.to_str().unwrap();
    let data = fixtures().join("data");
    let mut cases = 0;

    // config.json and model.safetensors of a model directory.
    let model = home.join("model");
    copy_dir(&tiny_model_dir(), &model);
    let model_arg = model.to_str().unwrap().to_string();
    let generate = || cmd(&["generate", "--model", &model_arg, "--prompt", "Hi", "--max-new-tokens", "2"]);
    let config = std::fs::read(model.join("config.json")).unwrap();
    cases += sweep("config.json", &model.join("config.json"), &config, true, generate);
    std::fs::write(model.join("config.json"), &config).unwrap();
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    cases += sweep("model.safetensors", &model.join("model.safetensors"), &weights, false, generate);

    // Alpaca JSON (generate-responses), HellaSwag jsonl (eval hellaswag).
    let alpaca = home.join("records.json");
    let out = home.join("responses.json");
    let out_arg = out.to_str().unwrap().to_string();
    let alpaca_arg = alpaca.to_str().unwrap().to_string();
    cases += sweep("Alpaca JSON", &alpaca, &std::fs::read(data.join("instruction_data_60.json")).unwrap(), true, || {
        cmd(&["generate-responses", "--model", tiny, "--data", &alpaca_arg, "--out", &out_arg, "--limit", "1", "--max-new-tokens", "2"])
    });
    assert!(!out.exists(), "no responses file from bad records");
    let hellaswag = home.join("hellaswag.jsonl");
    let hellaswag_arg = hellaswag.to_str().unwrap().to_string();
    cases += sweep("HellaSwag jsonl", &hellaswag, &std::fs::read(data.join("hellaswag_val_40.jsonl")).unwrap(), true, || {
        cmd(&["eval", "hellaswag", "--model", tiny, "--data", &hellaswag_arg, "--limit", "2"])
    });

    // The judge's input: responses written by generate-responses (read before any judge is asked).
    let responses = home.join("test_responses.json");
    let responses_arg = responses.to_str().unwrap().to_string();
    let valid_responses = serde_json::json!([{ "instruction": "Say hi.", "input": "", "output": "Hi.", "model_response": "Hi!" }]);
    cases += sweep("responses JSON", &responses, valid_responses.to_string().as_bytes(), true, || {
        let mut c = llmfs(home);
        c.args(["eval", "judge", "--responses", &responses_arg, "--judge-url", "http://127.0.0.1:9", "--retries", "0"]);
        c
    });

    // Split CSVs of the spam task (eval spam, with a classifier on the tiny trunk).
    let classifier_dir = home.join("classifier");
    let trunk = gpt::hf::load_model(tiny, &gpt::burn::prelude::Device::flex(), 0).unwrap();
    let classifier = gpt::Classifier::new(trunk.into(), vec!["ham".into(), "spam".into()], gpt::EOT_TOKEN, 0).unwrap();
    gpt::hf::save_classifier_dir(&classifier, &classifier_dir).unwrap();
    let splits = home.join("spam");
    pipelines::data::spam::prepare_spam(data.join("sms_spam_collection.zip").to_str().unwrap(), &splits, 123).unwrap();
    let test_csv = splits.join("test.csv");
    let (classifier_arg, csv_arg) = (classifier_dir.to_str().unwrap().to_string(), test_csv.to_str().unwrap().to_string());
    cases += sweep_allowing("spam CSV", &test_csv, &std::fs::read(&test_csv).unwrap(), true, &["truncated"], || {
        cmd(&["eval", "spam", "--model", &classifier_arg, "--data", &csv_arg])
    });

    // FineWeb parquet (prepare fineweb --input) and token shards (pretrain --data).
    let parquet = home.join("docs.parquet");
    let parquet_arg = parquet.to_str().unwrap().to_string();
    let shards_out = home.join("shards-out").to_str().unwrap().to_string();
    cases += sweep("parquet", &parquet, &std::fs::read(data.join("fineweb_edu_sample.parquet")).unwrap(), false, || {
        let mut c = llmfs(home);
        c.args(["prepare", "fineweb", "--input", &parquet_arg, "--out", &shards_out, "--shard-size", "10000"]);
        c
    });
    let shards = home.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let tokens: Vec<u16> = (0..4096).map(|i| (i * 7 % 50000) as u16).collect();
    let val = shards.join("edufineweb_val_000000.npy");
    let train = shards.join("edufineweb_train_000001.npy");
    pipelines::data::shards::write_tokens(&val, &tokens, pipelines::data::shards::TokenType::Uint16).unwrap();
    pipelines::data::shards::write_tokens(&train, &tokens, pipelines::data::shards::TokenType::Uint16).unwrap();
    let valid_shard = std::fs::read(&train).unwrap();
    let (shards_arg, run_arg) = (shards.to_str().unwrap().to_string(), home.join("run").to_str().unwrap().to_string());
    cases += sweep("npy shard", &train, &valid_shard, false, || {
        cmd(&["pretrain", "--data", &shards_arg, "--run-dir", &run_arg, "--init", tiny, "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--plain"])
    });
    println!("{cases} bad-input cases through the CLI");
    assert_eq!(cases, 5 * 5 + 3 * 4, "five text inputs × 5 variants, three binary × 4");
}

/// A path that does not exist, or is a directory where a file is expected: also exit 1, named.
#[test]
fn missing_and_misplaced_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing: PathBuf = tmp.path().join("nothing.jsonl");
    let cases: Vec<Vec<String>> = vec![
        vec!["eval".into(), "hellaswag".into(), "--model".into(), "random:tiny".into(), "--data".into(), missing.display().to_string()],
        vec!["eval".into(), "hellaswag".into(), "--model".into(), "random:tiny".into(), "--data".into(), tmp.path().display().to_string()],
        vec!["classify".into(), "--model".into(), missing.display().to_string(), "--text".into(), "hi".into()],
        vec!["eval".into(), "judge".into(), "--responses".into(), missing.display().to_string()],
    ];
    for args in cases {
        let out = run(llmfs(tmp.path()).args(&args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let named = args.last().map(|a| a.as_str()).filter(|a| err.contains(a)).is_some() || err.contains(&missing.display().to_string()) || err.contains(&tmp.path().display().to_string());
        assert!(named, "{args:?}: the error names no path: {err}");
    }
}
