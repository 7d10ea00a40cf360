//! `llmfs serve`: the real binary on a free loopback port, driven by a real HTTP client (ureq).
//! Every server is killed when its guard drops; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use gpt::burn::prelude::Device;
use gpt::generate::{GenerateConfig, generate};
use gpt::{Classifier, EOT_TOKEN, Tokenizer};
use serde_json::{Value, json};

/// A running `llmfs serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `llmfs serve --model MODEL ARGS` on a free port and waits (at most 2 minutes) for /health.
    fn start(model: &str, args: &[&str]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = home.path().join("server.log");
        let child = llmfs(home.path())
            .env_remove("LLMFS_API_KEY")
            .args(["serve", "--model", model, "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("llmfs starts");
        let mut server = Server { child, url: format!("http://127.0.0.1:{port}"), log, _home: home };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("llmfs serve exited with {status}: {}", server.log());
            }
            if ureq::get(&format!("{}/health", server.url)).timeout(Duration::from_secs(2)).call().is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up: {}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = ureq::get(&format!("{}{path}", self.url)).timeout(Duration::from_secs(120));
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        answer(request.call())
    }

    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let mut request = ureq::post(&format!("{}{path}", self.url))
            .set("Content-Type", "application/json")
            .timeout(Duration::from_secs(120));
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        match request.send_string(body) {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
            Err(error) => panic!("POST {path}: {error}"),
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, &body.to_string(), None);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    /// The `data:` payloads of a streamed request, in order.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let response = ureq::post(&format!("{}{path}", self.url)).timeout(Duration::from_secs(120)).send_string(&body.to_string()).unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.content_type().starts_with("text/event-stream"), "{}", response.content_type());
        let text = response.into_string().unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
        events
            .iter()
            .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_string())
            .collect()
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (status, text) = match result {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
        Err(error) => panic!("{error}"),
    };
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn model() -> String {
    tiny_model_dir().display().to_string()
}

/// Asserts OpenAI's error shape and returns the error object.
fn error_of(status: u16, body: &Value, expected: u16) -> Value {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some() && error.get("code").is_some(), "{body}");
    error.clone()
}

/// Waits for a child to exit (at most 60 s; killed after).
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("llmfs serve kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn completions_match_in_process_generation_streamed_or_not() {
    let server = Server::start(&model(), &[]);
    let (status, health) = server.get("/health", None);
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, models) = server.get("/v1/models", None);
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], model());
    assert_eq!(models["data"][0]["object"], "model");

    // In process: the same prompt, greedy.
    let tiny = gpt::hf::load_model(&model(), &Device::flex(), 0).unwrap();
    let prompt = "Every effort moves you";
    let expected = generate(&tiny, &[Tokenizer::gpt2().encode(prompt)], &GenerateConfig::greedy(20)).unwrap().remove(0);

    let request = json!({ "model": model(), "prompt": prompt, "max_tokens": 20, "temperature": 0 });
    let (status, body) = server.post("/v1/completions", &request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], model());
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    assert_eq!(body["choices"][0]["text"], expected.text);
    assert_eq!(body["choices"][0]["finish_reason"], expected.finish_reason.as_str());
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], expected.prompt_ids.len());
    assert_eq!(usage["completion_tokens"], expected.token_ids.len());
    assert_eq!(usage["total_tokens"], expected.prompt_ids.len() + expected.token_ids.len());

    // Streamed: the chunks add up to the same text; the stream ends with [DONE].
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let events = server.stream("/v1/completions", &streamed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, expected.text);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion" && c["id"] == chunks[0]["id"]));
    let finish: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!(expected.finish_reason.as_str())]);
    assert_eq!(chunks.last().unwrap()["usage"], *usage, "the usage chunk comes last");

    // A stop string cuts the text, streamed or not.
    let word = expected.text.split_whitespace().nth(1).unwrap().to_string();
    let stopped = json!({ "prompt": prompt, "max_tokens": 20, "temperature": 0, "stop": [word] });
    let (status, body) = server.post("/v1/completions", &stopped);
    assert_eq!(status, 200, "{body}");
    let cut = &expected.text[..expected.text.find(&word).unwrap()];
    assert_eq!(body["choices"][0]["text"], cut);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Chat: the messages' contents joined (not an instruction run), as a completion of that text.
    let chat = json!({ "model": model(), "messages": [{ "role": "user", "content": prompt }], "max_tokens": 20, "temperature": 0 });
    let (status, body) = server.post("/v1/chat/completions", &chat);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], expected.text);
    assert_eq!(body["usage"]["completion_tokens"], expected.token_ids.len());
    let mut chat_streamed = chat.clone();
    chat_streamed["stream"] = json!(true);
    let events = server.stream("/v1/chat/completions", &chat_streamed);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, expected.text);

    // Sampling with a seed is reproducible.
    let sampled = json!({ "prompt": prompt, "max_tokens": 10, "temperature": 0.9, "top_p": 0.95, "seed": 42 });
    assert_eq!(server.post("/v1/completions", &sampled).1["choices"], server.post("/v1/completions", &sampled).1["choices"]);
}

#[test]
fn bad_requests_get_openai_errors_never_500s() {
    let server = Server::start(&model(), &[]);
    let (status, text) = server.post_raw("/v1/completions", "{\"prompt\": ", None);
    let error = error_of(status, &serde_json::from_str(&text).unwrap(), 400);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("JSON"), "{error}");

    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": "ten" }));
    assert_eq!(error_of(status, &body, 400)["param"], "max_tokens");
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": { "text": "hi" } }));
    assert_eq!(error_of(status, &body, 400)["param"], "prompt");
    let (status, body) = server.post("/v1/completions", &json!(["not", "an", "object"]));
    error_of(status, &body, 400);
    let (status, body) = server.post("/v1/completions", &json!({ "max_tokens": 3 }));
    assert_eq!(error_of(status, &body, 400)["param"], "prompt");

    let (status, body) = server.post("/v1/completions", &json!({ "model": "gpt-4", "prompt": "hi" }));
    let error = error_of(status, &body, 404);
    assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some("model_not_found"), Some("model")));
    let (status, body) = server.post("/v1/chat/completions", &json!({ "model": "gpt-4", "messages": [] }));
    assert_eq!(error_of(status, &body, 404)["code"], "model_not_found");

    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "n": 2 }));
    assert_eq!(error_of(status, &body, 400)["param"], "n");
    let (status, body) = server.post("/v1/chat/completions", &json!({ "messages": [{ "role": "user", "content": "hi" }], "n": 2 }));
    assert_eq!(error_of(status, &body, 400)["param"], "n");
    // The fixture's context window is 128 tokens.
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": 200 }));
    let error = error_of(status, &body, 400);
    assert_eq!(error["param"], "max_tokens");
    assert!(error["message"].as_str().unwrap().contains("128"), "{error}");
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "temperature": 5 }));
    assert_eq!(error_of(status, &body, 400)["param"], "temperature");
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "stop": "" }));
    assert_eq!(error_of(status, &body, 400)["param"], "stop");
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": [1, 2, 99999] }));
    assert_eq!(error_of(status, &body, 400)["param"], "prompt");
    let (status, body) = server.post("/v1/chat/completions", &json!({ "messages": [] }));
    assert_eq!(error_of(status, &body, 400)["param"], "messages");
    let (status, body) = server.post("/v1/chat/completions", &json!({ "messages": "hi" }));
    assert_eq!(error_of(status, &body, 400)["param"], "messages");
    let (status, body) = server.post("/v1/classify", &json!({ "input": "hi" }));
    error_of(status, &body, 400);

    // Just over 1 MiB.
    let big = json!({ "prompt": "x".repeat((1 << 20) + 10) }).to_string();
    let (status, text) = server.post_raw("/v1/completions", &big, None);
    assert_eq!(error_of(status, &serde_json::from_str(&text).unwrap(), 413)["type"], "invalid_request_error");

    let (status, body) = server.get("/v1/nothing", None);
    error_of(status, &body, 404);
    let (status, body) = server.get("/v1/completions", None);
    error_of(status, &body, 405);

    // Still serving.
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": 2 }));
    assert_eq!(status, 200, "{body}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn api_key_guards_the_v1_routes() {
    let server = Server::start(&model(), &["--api-key", "sekrit"]);
    let body = json!({ "prompt": "hi", "max_tokens": 2 }).to_string();
    let (status, text) = server.post_raw("/v1/completions", &body, None);
    assert_eq!(error_of(status, &serde_json::from_str(&text).unwrap(), 401)["code"], "invalid_api_key");
    let (status, text) = server.post_raw("/v1/completions", &body, Some("wrong"));
    assert_eq!(error_of(status, &serde_json::from_str(&text).unwrap(), 401)["code"], "invalid_api_key");
    let (status, _) = server.get("/v1/models", None);
    assert_eq!(status, 401);
    let (status, text) = server.post_raw("/v1/completions", &body, Some("sekrit"));
    assert_eq!(status, 200, "{text}");
    let (status, _) = server.get("/v1/models", Some("sekrit"));
    assert_eq!(status, 200);
    assert_eq!(server.get("/health", None).0, 200, "health stays open");
}

#[test]
fn refuses_a_non_loopback_host_without_a_key() {
    let home = tempfile::tempdir().unwrap();
    let child = llmfs(home.path())
        .env_remove("LLMFS_API_KEY")
        .args(["serve", "--model", &model(), "--host", "0.0.0.0", "--port", &free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = wait_exit_with_stderr(child);
    assert!(!status.success());
    assert!(stderr.contains("refusing to serve on 0.0.0.0") && stderr.contains("--api-key"), "{stderr}");
}

#[test]
fn help_lists_the_flags() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["serve", "--help"]));
    assert!(out.status.success());
    for flag in ["--model", "--host", "--port", "--api-key", "--max-concurrency", "--insecure", "--device", "--seed"] {
        assert!(stdout(&out).contains(flag), "{flag}");
    }
}

fn wait_exit_with_stderr(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = wait_exit(child);
    (status, reader.join().unwrap())
}

/// A run directory of the instruction task: chat turns become the Alpaca prompt it was trained on.
#[test]
fn chat_with_an_instruction_run_uses_the_alpaca_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("instruct");
    std::fs::create_dir_all(run_dir.join("model")).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_model_dir().join(file), run_dir.join("model").join(file)).unwrap();
    }
    std::fs::write(run_dir.join("run.json"), r#"{"config": {"task": "instruction", "model": "tiny"}, "llmfs_version": "0.1.0"}"#).unwrap();
    let name = run_dir.display().to_string();
    let server = Server::start(&name, &[]);

    let record = pipelines::data::instruction::InstructionRecord {
        instruction: "Name a colour.".into(),
        input: String::new(),
        output: String::new(),
    };
    let prompt = format!("{}\n\n### Response:\n", pipelines::data::instruction::format_input(&record));
    let tiny = pipelines::runs::load_model(&name, &Device::flex(), 0).unwrap();
    let expected = generate(&tiny, &[Tokenizer::gpt2().encode(&prompt)], &GenerateConfig::greedy(12)).unwrap().remove(0);

    let messages = json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Name a colour." }]);
    let (status, body) = server.post("/v1/chat/completions", &json!({ "model": name, "messages": messages, "max_tokens": 12, "temperature": 0 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], expected.text);
    assert_eq!(body["usage"]["prompt_tokens"], expected.prompt_ids.len());
    assert!(server.log().contains("alpaca"), "{}", server.log());
}

#[test]
fn chat_with_a_llama_family_model_uses_its_chat_template_and_eos_ids() {
    for name in ["qwen3-tiny", "llama-tiny"] {
        let dir = fixtures().join(name);
        let model = dir.display().to_string();
        let server = Server::start(&model, &[]);
        let expected_json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let messages = expected_json["conversation"].clone();
        // In process: the template's ids (transformers' `chat_ids`), greedy, stopping at the model's EOS ids.
        let tokenizer = Tokenizer::from_model_dir(&dir).unwrap();
        let conversation: Vec<gpt::text::ChatMessage> = serde_json::from_value(messages.clone()).unwrap();
        let (_, prompt) = tokenizer.apply_chat_template(&conversation, true, None).unwrap();
        let local = gpt::hf::load_language_model_dir(&dir, &Device::flex()).unwrap();
        let expected = generate(&local, &[prompt.clone()], &GenerateConfig::greedy(12).with_tokenizer(&tokenizer)).unwrap().remove(0);

        let (status, body) = server.post("/v1/chat/completions", &json!({ "model": model, "messages": messages, "max_tokens": 12, "temperature": 0 }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], expected.text, "{name}");
        assert_eq!(body["usage"]["prompt_tokens"], prompt.len(), "{name}");
        assert_eq!(body["usage"]["completion_tokens"], expected.token_ids.len(), "{name}");
        assert!(server.log().contains("the model's chat template"), "{}", server.log());

        // Completions encode the prompt with the tokenizer's defaults (Llama: <|begin_of_text|>).
        let prompt = expected_json["greedy_prompt"].as_str().unwrap();
        let (status, body) = server.post("/v1/completions", &json!({ "model": model, "prompt": prompt, "max_tokens": 5, "temperature": 0 }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["prompt_tokens"], expected_json["greedy_prompt_ids"].as_array().unwrap().len(), "{name}");
    }
}

/// A full queue is a 429; a client that hangs up stops its generation (and frees its place).
#[test]
fn full_queue_is_429_and_a_disconnect_stops_generation() {
    // A GPT-2-sized random model: slow enough on a CPU that a long generation is still running
    // when the next request comes.
    let server = Server::start("random:gpt2", &["--max-concurrency", "1"]);
    let long = json!({ "prompt": "Hello", "max_tokens": 1000, "temperature": 0, "stream": true });
    let response = ureq::post(&format!("{}/v1/completions", server.url))
        .timeout(Duration::from_secs(120))
        .send_string(&long.to_string())
        .unwrap();
    let mut reader = BufReader::new(response.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: {"), "{first}");

    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": 1 }));
    let error = error_of(status, &body, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");

    drop(reader);
    // The generation stops (1000 tokens would take minutes) and its place is free again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi", "max_tokens": 1 }));
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "the disconnected generation kept running: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.log().contains("the client disconnected"), "{}", server.log());
}

/// A classifier directory: the fixture's trunk and a seeded random head.
fn tiny_classifier(dir: &Path) {
    let device = Device::flex();
    let trunk = gpt::hf::load_model(&model(), &device, 0).unwrap();
    let classifier = Classifier::new(trunk.into(), vec!["ham".into(), "spam".into()], EOT_TOKEN, 7).unwrap();
    gpt::hf::save_classifier_dir(&classifier, dir).unwrap();
}

#[test]
fn classify_labels_texts_like_classify_texts() {
    let dir = tempfile::tempdir().unwrap();
    let classifier_dir = dir.path().join("classifier");
    tiny_classifier(&classifier_dir);
    let name = classifier_dir.display().to_string();
    let server = Server::start(&name, &[]);

    let texts = vec!["Win a free prize now!".to_string(), "See you at lunch".to_string()];
    let classifier = gpt::hf::load_classifier_dir(&classifier_dir, &Device::flex()).unwrap();
    let expected = pipelines::eval::classifier::classify_texts(&classifier, &Tokenizer::gpt2(), &texts, 8).unwrap();

    let (status, body) = server.post("/v1/classify", &json!({ "model": name, "input": texts }));
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (got, want) in data.iter().zip(&expected) {
        assert_eq!(got["label"], want.label);
        assert!((got["probability"].as_f64().unwrap() - want.probability).abs() < 1e-5, "{got}");
        let p = &got["probabilities"];
        assert!((p["ham"].as_f64().unwrap() + p["spam"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{got}");
    }
    let (status, body) = server.post("/v1/classify", &json!({ "input": "one text" }));
    assert_eq!((status, body["data"].as_array().unwrap().len()), (200, 1));
    let (status, body) = server.post("/v1/classify", &json!({ "input": [] }));
    assert_eq!(error_of(status, &body, 400)["param"], "input");
    let (status, body) = server.post("/v1/completions", &json!({ "prompt": "hi" }));
    error_of(status, &body, 400);
}

/// Concurrent requests are decoded together (continuous batching), and each still gets exactly
/// the answer it gets alone, whatever its sampling settings.
#[test]
fn concurrent_requests_share_decode_steps_and_get_their_solo_answers() {
    let server = Server::start(&model(), &["--max-concurrency", "8"]);
    let requests: Vec<Value> = (0..8)
        .map(|i| {
            let prompt = format!("Request {i} says{}", " hello".repeat(i));
            match i % 3 {
                0 => json!({ "prompt": prompt, "max_tokens": 40 + i, "temperature": 0 }),
                1 => json!({ "prompt": prompt, "max_tokens": 30, "temperature": 0.9, "top_p": 0.9, "seed": i }),
                _ => json!({ "prompt": prompt, "max_tokens": 50, "temperature": 1.2, "seed": 100 + i, "stop": ["\n"] }),
            }
        })
        .collect();
    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests.iter().map(|r| scope.spawn(|| server.post("/v1/completions", r))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body
        }).collect()
    });
    for (i, (request, batched)) in requests.iter().zip(&together).enumerate() {
        let (_, alone) = server.post("/v1/completions", request);
        assert_eq!(batched["choices"][0]["text"], alone["choices"][0]["text"], "request {i}");
        assert_eq!(batched["usage"], alone["usage"], "request {i}");
    }
    let log = server.log();
    let shared = log.lines().filter_map(|l| l.split("; ").nth(1)?.split(' ').next()?.parse::<usize>().ok()).max();
    assert!(shared.is_some_and(|n| n >= 1), "no request finished while others were running: {log}");
}

/// A Python with the official `openai` client: $LLMFS_OPENAI_PYTHON (scripts/test.sh sets up a
/// venv), else `python3` when it has the package.
fn openai_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("LLMFS_OPENAI_PYTHON").map(PathBuf::from).into_iter().chain([PathBuf::from("python3")]);
    candidates.into_iter().find(|python| {
        std::process::Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success())
    })
}

/// The official client reads our answers as OpenAI's: the same text as our own HTTP client gets,
/// streamed chat included, and a 400 it raises as `BadRequestError` with the parameter named.
#[test]
fn the_official_openai_client_works_against_the_server() {
    let Some(python) = openai_python() else {
        eprintln!("skipped the openai-client check: no Python with the `openai` package (scripts/test.sh installs one when it can; or set LLMFS_OPENAI_PYTHON)");
        return;
    };
    let server = Server::start(&model(), &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/openai_client_check.py");
    let out = std::process::Command::new(python).arg(script).arg(format!("{}/v1", server.url)).arg(model()).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let result: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();

    let (_, ours) = server.post("/v1/completions", &json!({ "prompt": "Every effort moves you", "max_tokens": 12, "temperature": 0 }));
    assert_eq!(result["models"], json!([model()]));
    assert_eq!(result["completion"], ours["choices"][0]["text"]);
    assert_eq!(result["completion_finish"], ours["choices"][0]["finish_reason"]);
    assert_eq!(result["completion_usage"]["total_tokens"], ours["usage"]["total_tokens"]);
    let chat = json!({ "messages": [{ "role": "user", "content": "Every effort moves you" }], "max_tokens": 12, "temperature": 0 });
    let (_, ours) = server.post("/v1/chat/completions", &chat);
    assert_eq!(result["chat_stream"], ours["choices"][0]["message"]["content"]);
    assert_eq!(result["chat_finish"], ours["choices"][0]["finish_reason"]);
    assert_eq!(result["bad_request_status"], 400);
    assert_eq!(result["bad_request_param"], "n");
}
