//! The LLM judge against fake Ollama and OpenAI-compatible servers on 127.0.0.1: the exact
//! prompt and options, score parsing, unparseable replies, retries after 5xx and timeouts,
//! concurrency, and the one message for a judge that is not running.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common_http::{Reply, Request, Server};
use pipelines::eval::judge::{
    JudgeConfig, JudgeError, JudgeKind, default_report_path, judge_prompt, judge_responses, parse_score, write_report,
};
use pipelines::eval::responses::ResponseRecord;
use serde_json::{Value, json};

fn response(instruction: &str, input: &str, output: &str, model_response: &str) -> ResponseRecord {
    ResponseRecord { instruction: instruction.into(), input: input.into(), output: output.into(), model_response: model_response.into(), messages: None }
}

/// Four records; the fake judges answer by the model response they are asked about.
fn records() -> Vec<ResponseRecord> {
    vec![
        response("Give a synonym for 'quiet'.", "", "A synonym for 'quiet' is 'silent'.", "silent"),
        response("Convert 5 kilograms to grams.", "", "5 kilograms is 5000 grams.", "5 kg is 500 g."),
        response("Correct the grammar in the following sentence.", "She don't like coffee.", "She doesn't like coffee.", "Coffee."),
        response("What is the capital of Canada?", "", "The capital of Canada is Ottawa.", "Ottawa is the capital."),
    ]
}

/// The judge's reply to each record of [`records`], and the score it must give.
const REPLIES: [(&str, &str, Option<u8>); 4] = [
    ("`silent`", "85", Some(85)),
    ("`5 kg is 500 g.`", "Score: 60/100", Some(60)),
    ("`Coffee.`", "I cannot score this response.", None),
    ("`Ottawa is the capital.`", "100.", Some(100)),
];

fn reply_for(prompt: &str) -> &'static str {
    REPLIES.iter().find(|(needle, _, _)| prompt.contains(&format!("score the model response {needle}"))).map_or("?", |r| r.1)
}

fn user_message(request: &Request) -> String {
    request.json()["messages"][0]["content"].as_str().unwrap().to_string()
}

fn ollama_reply(content: &str) -> Reply {
    let body = json!({ "model": "llama3.1", "created_at": "2024-01-01T00:00:00Z",
        "message": { "role": "assistant", "content": content }, "done": true });
    Reply::Ok(body.to_string().into_bytes())
}

fn openai_reply(content: &str) -> Reply {
    let body = json!({ "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }] });
    Reply::Ok(body.to_string().into_bytes())
}

fn config(kind: JudgeKind, server: &Server) -> JudgeConfig {
    JudgeConfig { url: server.base.clone(), first_backoff: Duration::from_millis(10), ..JudgeConfig::new(kind) }
}

#[test]
fn the_prompt_is_the_books_word_for_word() {
    let record = &records()[2];
    assert_eq!(
        judge_prompt(record),
        "Given the input `Below is an instruction that describes a task. Write a response that appropriately completes \
         the request.\n\n### Instruction:\nCorrect the grammar in the following sentence.\n\n### Input:\nShe don't like \
         coffee.` and correct output `She doesn't like coffee.`, score the model response `Coffee.` on a scale from 0 to \
         100, where 100 is the best score. Respond with the integer number only."
    );
}

#[test]
fn scores_are_the_first_whole_number_from_0_to_100() {
    for (reply, want) in [
        ("85", Some(85)),
        ("Score: 85/100", Some(85)),
        ("  92\n", Some(92)),
        ("I'd give it 73.", Some(73)),
        ("0", Some(0)),
        ("100", Some(100)),
        ("007", Some(7)),
        ("150, no wait: 90", Some(90)),
        ("85.5", Some(85)),
        ("150.5 then 40", Some(40)),
        ("-5 or 20", Some(20)),
        ("as llama3 I say 64", Some(64)),
        ("I cannot", None),
        ("", None),
        ("101", None),
        ("99999999999999999999999", None),
    ] {
        assert_eq!(parse_score(reply), want, "{reply:?}");
    }
}

#[test]
fn an_ollama_judge_gets_the_prompt_and_options_and_its_replies_are_scored() {
    let server = Server::start_fn(|request| {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/chat"));
        ollama_reply(reply_for(&user_message(request)))
    });
    let records = records();
    let progress = AtomicUsize::new(0);
    let report = judge_responses(&records, &config(JudgeKind::Ollama, &server), |done, total| {
        assert_eq!(total, 4);
        progress.fetch_max(done, Ordering::SeqCst);
    })
    .unwrap();

    assert_eq!(progress.load(Ordering::SeqCst), 4);
    assert_eq!((report.n, report.scored, report.unparseable), (4, 3, 1));
    assert_eq!(report.mean_score, Some((85.0 + 60.0 + 100.0) / 3.0));
    assert_eq!(report.url, format!("{}/api/chat", server.base));
    for (i, judged) in report.records.iter().enumerate() {
        assert_eq!((judged.index, judged.reply.as_str(), judged.score), (i, REPLIES[i].1, REPLIES[i].2));
    }
    assert_eq!(report.summary(), json!({ "mean_score": (85.0 + 60.0 + 100.0) / 3.0, "scored": 3, "unparseable": 1 }));

    let requests = server.full_requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let body = request.json();
        assert_eq!(body["model"], "llama3.1");
        assert_eq!(body["stream"], false);
        assert_eq!(body["options"], json!({ "temperature": 0, "seed": 123, "num_ctx": 2048 }));
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["messages"][0]["role"], "user");
        assert!(!request.headers.contains_key("authorization"));
    }
    let mut prompts: Vec<String> = requests.iter().map(user_message).collect();
    let mut want: Vec<String> = records.iter().map(judge_prompt).collect();
    prompts.sort();
    want.sort();
    assert_eq!(prompts, want, "one request per record, with its prompt");
}

#[test]
fn an_openai_compatible_judge_gets_the_model_seed_temperature_and_key() {
    let server = Server::start_fn(|request| {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/chat/completions"));
        openai_reply(reply_for(&user_message(request)))
    });
    let config = JudgeConfig { model: "judge-7b".into(), api_key: Some("sk-test".into()), ..config(JudgeKind::OpenAi, &server) };
    let report = judge_responses(&records(), &config, |_, _| {}).unwrap();
    assert_eq!((report.scored, report.unparseable), (3, 1));
    assert_eq!(report.records.iter().map(|r| r.score).collect::<Vec<_>>(), REPLIES.map(|r| r.2));

    for request in server.full_requests.lock().unwrap().iter() {
        let body = request.json();
        assert_eq!(body["model"], "judge-7b");
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["seed"], 123);
        assert_eq!(body.get("options"), None);
        assert_eq!(request.headers["authorization"], "Bearer sk-test");
        assert_eq!(request.headers["content-type"], "application/json");
    }

    // A base URL ending in /v1 (as OpenAI clients take it) reaches the same endpoint.
    let v1 = JudgeConfig { url: format!("{}/v1/", server.base), ..config };
    assert_eq!(judge_responses(&records()[..1], &v1, |_, _| {}).unwrap().records[0].score, Some(85));
}

#[test]
fn requests_run_concurrently_up_to_the_limit() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (in_flight.clone(), most.clone());
    let server = Server::start_fn(move |request| {
        peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        now.fetch_sub(1, Ordering::SeqCst);
        ollama_reply(reply_for(&user_message(request)))
    });
    let many: Vec<ResponseRecord> = records().into_iter().cycle().take(8).collect();
    let config = JudgeConfig { concurrency: 3, ..config(JudgeKind::Ollama, &server) };
    let report = judge_responses(&many, &config, |_, _| {}).unwrap();
    assert_eq!(report.records.iter().map(|r| r.score).collect::<Vec<_>>(), [REPLIES.map(|r| r.2), REPLIES.map(|r| r.2)].concat());
    assert_eq!(most.load(Ordering::SeqCst), 3, "three requests at once, never more");
}

#[test]
fn a_500_and_a_timeout_are_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let server = Server::start_fn(move |_| match count.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::StatusBody(500, b"{\"error\":\"out of memory\"}".to_vec()),
        1 => Reply::Delayed(Duration::from_millis(1500), Box::new(ollama_reply("10"))),
        _ => ollama_reply("42"),
    });
    let config = JudgeConfig { concurrency: 1, timeout: Duration::from_millis(400), ..config(JudgeKind::Ollama, &server) };
    let report = judge_responses(&records()[..1], &config, |_, _| {}).unwrap();
    assert_eq!(report.records[0].score, Some(42));
    assert_eq!(calls.load(Ordering::SeqCst), 3, "a 500, a timeout, then the answer");
}

#[test]
fn retries_are_bounded_and_a_4xx_is_final() {
    let server = Server::start_fn(|request| match request.json()["model"].as_str() {
        Some("broken") => Reply::StatusBody(503, b"overloaded".to_vec()),
        _ => Reply::StatusBody(404, br#"{"error":"model \"llama3.1\" not found, try pulling it first"}"#.to_vec()),
    });
    let broken = JudgeConfig { model: "broken".into(), retries: 2, ..config(JudgeKind::Ollama, &server) };
    let error = judge_responses(&records()[..1], &broken, |_, _| {}).unwrap_err();
    assert!(matches!(error, JudgeError::Status { status: 503, attempts: 3, .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("the judge at {}/api/chat answered HTTP 503: overloaded (tried 3 times)", server.base));
    assert_eq!(server.request_count(), 3);

    let missing = judge_responses(&records()[..1], &config(JudgeKind::Ollama, &server), |_, _| {}).unwrap_err();
    assert!(matches!(missing, JudgeError::Status { status: 404, attempts: 1, .. }));
    assert!(missing.to_string().ends_with("(pull the model with `ollama pull llama3.1`)"), "{missing}");
    assert_eq!(server.request_count(), 4, "a 404 is not retried");
}

#[test]
fn a_judge_that_is_not_running_gives_one_clear_message() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let many: Vec<ResponseRecord> = records().into_iter().cycle().take(20).collect();
    let config = JudgeConfig { url: url.clone(), concurrency: 4, ..JudgeConfig::new(JudgeKind::Ollama) };
    let started = Instant::now();
    let error = judge_responses(&many, &config, |_, _| panic!("no reply expected")).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "no retries: {:?}", started.elapsed());
    assert!(matches!(error, JudgeError::NotRunning { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "no Ollama judge is running at {url} (connection refused): start it with `ollama serve` and `ollama pull llama3.1`, or pass --judge-url"
        )
    );
    let openai = JudgeConfig { url: url.clone(), ..JudgeConfig::new(JudgeKind::OpenAi) };
    let error = judge_responses(&many[..1], &openai, |_, _| {}).unwrap_err().to_string();
    assert!(error.starts_with(&format!("no OpenAI-compatible judge is running at {url} (connection refused)")), "{error}");
}

#[test]
fn a_reply_in_the_wrong_protocol_is_an_error() {
    let server = Server::start_fn(|_| openai_reply("85"));
    let error = judge_responses(&records()[..1], &config(JudgeKind::Ollama, &server), |_, _| {}).unwrap_err();
    assert!(matches!(error, JudgeError::BadReply { .. }), "{error:?}");
    assert!(error.to_string().contains("is --judge right?"), "{error}");
}

#[test]
fn the_report_is_written_next_to_the_responses_or_in_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let responses = dir.path().join("test_responses.json");
    assert_eq!(default_report_path(&responses, None), dir.path().join("eval/judge.json"));
    assert_eq!(default_report_path(&responses, Some(&dir.path().join("run"))), dir.path().join("run/eval/judge.json"));

    let server = Server::start_fn(|request| ollama_reply(reply_for(&user_message(request))));
    let report = judge_responses(&records(), &config(JudgeKind::Ollama, &server), |_, _| {}).unwrap();
    let path = default_report_path(&responses, None);
    write_report(&path, &report).unwrap();
    let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["judge"], "ollama");
    assert_eq!(written["model"], "llama3.1");
    assert_eq!((written["n"].as_u64(), written["scored"].as_u64(), written["unparseable"].as_u64()), (Some(4), Some(3), Some(1)));
    assert_eq!(written["records"][2], json!({ "index": 2, "score": null, "reply": "I cannot score this response." }));
    assert_eq!(written["records"][1]["score"], 60);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("eval")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["judge.json"], "no temporary file left");
}
