//! `llmfs generate-responses` on the tiny fixture model, then `llmfs eval judge` against a fake
//! Ollama on 127.0.0.1, and the one-line error for a judge that is not running.

use std::net::TcpListener;

use crate::common::*;
use crate::common_http::{Reply, Server};
use gpt::burn::prelude::Device;
use gpt::generate::GenerateConfig;
use pipelines::data::instruction::read_records;
use pipelines::eval::responses::{generate_responses, read_responses};
use serde_json::{Value, json};

#[test]
fn generate_responses_then_judge() {
    let home = tempfile::tempdir().unwrap();
    let data = fixtures().join("data/instruction_data_60.json");
    let out_file = home.path().join("responses/test_responses.json");
    let out = run(llmfs(home.path())
        .args(["generate-responses", "--limit", "5", "--max-new-tokens", "10", "--batch-size", "2", "--device", "cpu", "--json"])
        .arg("--model")
        .arg(tiny_model_dir())
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out_file));
    assert!(out.status.success());
    let summary = last_json(&out);
    assert_eq!(summary["records"], 5);
    assert_eq!(summary["out"], out_file.to_str().unwrap());

    // The same responses as the library, one prompt at a time, gives.
    let records = read_records(&data).unwrap();
    let model = gpt::hf::load_model(tiny_model_dir().to_str().unwrap(), &Device::flex(), 0).unwrap();
    let want = generate_responses(&model, &records[..5], &GenerateConfig::greedy(10), 1, |_, _| {}).unwrap();
    let written = read_responses(&out_file).unwrap();
    assert_eq!(written, want);
    let raw: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert!(raw[0]["model_response"].is_string());

    // A fake Ollama that likes the first two responses only.
    let liked: Vec<String> = written[..2].iter().map(|r| format!("score the model response `{}`", r.model_response)).collect();
    let server = Server::start_fn(move |request| {
        let prompt = request.json()["messages"][0]["content"].as_str().unwrap_or("").to_string();
        let score = if liked.iter().any(|l| prompt.contains(l.as_str())) { "90" } else { "Score: 10" };
        let body = json!({ "message": { "role": "assistant", "content": score }, "done": true });
        Reply::Ok(body.to_string().into_bytes())
    });
    let out = run(llmfs(home.path())
        .args(["eval", "judge", "--judge-url", &server.base, "--concurrency", "2", "--json"])
        .arg("--responses")
        .arg(&out_file));
    assert!(out.status.success());
    assert_eq!(last_json(&out), json!({ "mean_score": (90.0 * 2.0 + 10.0 * 3.0) / 5.0, "scored": 5, "unparseable": 0 }));
    let report: Value = serde_json::from_slice(&std::fs::read(home.path().join("responses/eval/judge.json")).unwrap()).unwrap();
    assert_eq!(report["n"], 5);
    assert_eq!(report["records"][4]["reply"], "Score: 10");
    assert_eq!(report["records"][4]["score"], 10);
    assert_eq!(report["responses"], out_file.to_str().unwrap());
    assert_eq!(server.request_count(), 5);

    // Without --json: the average on stdout, for people.
    let out = run(llmfs(home.path()).args(["eval", "judge", "--judge-url", &server.base, "--limit", "2", "--out"]).arg(home.path().join("two.json")).arg("--responses").arg(&out_file));
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "average score: 90.00 (2 of 2 replies scored, 0 unparseable)");
}

#[test]
fn a_judge_that_is_not_running_is_one_line_of_error() {
    let home = tempfile::tempdir().unwrap();
    let responses = home.path().join("test_responses.json");
    let record = json!({ "instruction": "Say hi.", "input": "", "output": "Hi.", "model_response": "Hi." });
    std::fs::write(&responses, serde_json::to_vec(&vec![record; 12]).unwrap()).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(llmfs(home.path())
        .args(["eval", "judge", "--judge-url", &format!("http://127.0.0.1:{port}"), "--concurrency", "4"])
        .arg("--responses")
        .arg(&responses));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("start it with `ollama serve` and `ollama pull llama3.1`"), "{err}");
    assert!(!home.path().join("eval/judge.json").exists(), "no report from a failed run");

    // A responses file without responses names the record.
    std::fs::write(&responses, r#"[{"instruction": "i", "output": "o"}]"#).unwrap();
    let out = run(llmfs(home.path()).args(["eval", "judge"]).arg("--responses").arg(&responses));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("record 0 has no \"model_response\""), "{}", stderr(&out));
}
