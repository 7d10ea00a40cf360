//! An LLM as judge of instruction responses, as in *Build a Large Language Model From Scratch*,
//! chapter 7: for every record a judge model (llama3.1 through Ollama by default, or any
//! OpenAI-compatible server) is asked to score the model response against the correct output
//! from 0 to 100 ([`judge_prompt`]); the score is the first integer in 0..=100 of its reply
//! ([`parse_score`]), and the mean over the replies that have one is the result.
//!
//! Requests are deterministic (temperature 0, seed 123; Ollama: `num_ctx` 2048, not streamed),
//! run on `concurrency` worker threads, and are retried with exponential backoff after timeouts,
//! dropped connections and HTTP 5xx. A judge that is not running stops everything with one
//! message that says how to start it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::instruction::{format_input, to_pretty_json};
use crate::eval::responses::ResponseRecord;
use crate::retry::{Attempt, Backoff};

/// Ollama's address when it runs locally.
pub const DEFAULT_OLLAMA_URL: &str = "http://localhost:11434";
/// OpenAI's API (any OpenAI-compatible server works with `--judge-url`).
pub const DEFAULT_OPENAI_URL: &str = "https://api.openai.com";
/// The book's judge.
pub const DEFAULT_MODEL: &str = "llama3.1";
/// The book's request options.
pub const SEED: u64 = 123;
pub const NUM_CTX: u64 = 2048;
/// Where the report goes, relative to the responses' directory or the run directory.
pub const REPORT_FILE: &str = "eval/judge.json";

/// Which protocol the judge speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    /// Ollama's `/api/chat`.
    Ollama,
    /// `/v1/chat/completions` of OpenAI, vLLM, llama.cpp's server, LM Studio, ...
    #[serde(rename = "openai")]
    OpenAi,
}

impl JudgeKind {
    pub fn default_url(self) -> &'static str {
        match self {
            JudgeKind::Ollama => DEFAULT_OLLAMA_URL,
            JudgeKind::OpenAi => DEFAULT_OPENAI_URL,
        }
    }

    /// The chat endpoint under `url`: a base URL gets `/api/chat` (Ollama) or
    /// `/v1/chat/completions` (`/chat/completions` after a URL that ends in `/v1`); a URL that
    /// already names the endpoint is used as it is.
    pub fn endpoint(self, url: &str) -> String {
        let base = url.trim_end_matches('/');
        match self {
            JudgeKind::Ollama if base.ends_with("/api/chat") => base.to_string(),
            JudgeKind::Ollama => format!("{base}/api/chat"),
            JudgeKind::OpenAi if base.ends_with("/chat/completions") => base.to_string(),
            JudgeKind::OpenAi if base.ends_with("/v1") => format!("{base}/chat/completions"),
            JudgeKind::OpenAi => format!("{base}/v1/chat/completions"),
        }
    }
}

impl fmt::Display for JudgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JudgeKind::Ollama => "ollama",
            JudgeKind::OpenAi => "openai",
        })
    }
}

impl std::str::FromStr for JudgeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ollama" => Ok(JudgeKind::Ollama),
            "openai" => Ok(JudgeKind::OpenAi),
            _ => Err(format!("unknown judge `{s}`: use ollama or openai")),
        }
    }
}

/// How to reach the judge and how hard to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JudgeConfig {
    pub kind: JudgeKind,
    /// Base URL (or the endpoint itself, see [`JudgeKind::endpoint`]).
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` (OpenAI-compatible servers).
    pub api_key: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Longest wait for one reply.
    pub timeout: Duration,
    /// Tries after the first one, for timeouts, dropped connections and HTTP 5xx.
    pub retries: u32,
    /// The wait before the first retry, doubled before each next one.
    pub first_backoff: Duration,
}

impl JudgeConfig {
    /// The defaults for `kind`: its default URL, llama3.1, 4 requests at once, 5 minutes per
    /// reply (a local judge loads its model at the first request), 3 retries from 1 s.
    pub fn new(kind: JudgeKind) -> Self {
        Self {
            kind,
            url: kind.default_url().to_string(),
            model: DEFAULT_MODEL.to_string(),
            api_key: None,
            concurrency: 4,
            timeout: Duration::from_secs(300),
            retries: 3,
            first_backoff: Duration::from_secs(1),
        }
    }
}

/// Why judging stopped. Each is one message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// Nothing listens at the judge's address.
    #[error("{}", not_running(*kind, url, model))]
    NotRunning { kind: JudgeKind, url: String, model: String },
    /// An HTTP error: a 4xx at once, a 5xx after the retries.
    #[error("the judge at {url} answered HTTP {status}{}{}{}", excerpt(body), hint(*kind, *status, body, model), tries(*attempts))]
    Status { kind: JudgeKind, url: String, model: String, status: u16, body: String, attempts: u32 },
    /// No usable answer: a timeout, a dropped connection, an unknown host, ...
    #[error("cannot get a reply from the judge at {url}: {message}{}", tries(*attempts))]
    Transport { url: String, message: String, attempts: u32 },
    /// A reply that is not what the protocol promises.
    #[error("the judge at {url} answered something that is not {} chat reply ({message}); is --judge right?", protocol(*kind))]
    BadReply { kind: JudgeKind, url: String, message: String },
}

fn not_running(kind: JudgeKind, url: &str, model: &str) -> String {
    match kind {
        JudgeKind::Ollama => format!(
            "no Ollama judge is running at {url} (connection refused): start it with `ollama serve` and `ollama pull {model}`, or pass --judge-url"
        ),
        JudgeKind::OpenAi => {
            format!("no OpenAI-compatible judge is running at {url} (connection refused): start the server, or pass --judge-url")
        }
    }
}

fn protocol(kind: JudgeKind) -> &'static str {
    match kind {
        JudgeKind::Ollama => "an Ollama /api/chat",
        JudgeKind::OpenAi => "an OpenAI /v1/chat/completions",
    }
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() { String::new() } else { format!(": {}", crate::data::excerpt(body, 300)) }
}

fn hint(kind: JudgeKind, status: u16, body: &str, model: &str) -> String {
    match (kind, status) {
        (JudgeKind::Ollama, 404) if body.contains("not found") => format!(" (pull the model with `ollama pull {model}`)"),
        (JudgeKind::OpenAi, 401 | 403) => " (pass --api-key or set OPENAI_API_KEY)".to_string(),
        (JudgeKind::OpenAi, 404) => format!(" (does the server have the model {model}? choose one with --judge-model)"),
        _ => String::new(),
    }
}

fn tries(attempts: u32) -> String {
    if attempts > 1 { format!(" (tried {attempts} times)") } else { String::new() }
}

/// The question for one record, word for word the book's:
/// ``Given the input `{format_input}` and correct output `{output}`, score the model response
/// `{model_response}` on a scale from 0 to 100, where 100 is the best score. Respond with the
/// integer number only.``
/// A conversation's input is its messages, one `role: content` paragraph each.
pub fn judge_prompt(record: &ResponseRecord) -> String {
    let input = match &record.messages {
        Some(messages) => messages.iter().map(|m| format!("{}: {}", m.role, m.content)).collect::<Vec<_>>().join("\n\n"),
        None => format_input(&record.record()),
    };
    format!(
        "Given the input `{}` and correct output `{}`, score the model response `{}` on a scale from 0 to 100, \
         where 100 is the best score. Respond with the integer number only.",
        input,
        record.output,
        record.model_response
    )
}

/// The score in a judge's reply: the first whole number in 0..=100, reading left to right.
/// Numbers glued to letters (`llama3`), negative numbers, fraction digits (the `5` of `85.5`)
/// and numbers above 100 are skipped: `"Score: 85/100"` → 85, `"I'd say 92."` → 92,
/// `"150, no: 90"` → 90, `"I cannot"` → `None`.
pub fn parse_score(reply: &str) -> Option<u8> {
    let bytes = reply.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = |k: usize| start.checked_sub(k).map(|j| bytes[j]);
        let glued = before(1).is_some_and(|b| b.is_ascii_alphabetic()) || bytes.get(i).is_some_and(u8::is_ascii_alphabetic);
        let negative = before(1) == Some(b'-') && !before(2).is_some_and(|b| b.is_ascii_alphanumeric());
        let fraction = before(1) == Some(b'.') && before(2).is_some_and(|b| b.is_ascii_digit());
        if glued || negative || fraction {
            continue;
        }
        let digits = reply[start..i].trim_start_matches('0');
        if digits.len() <= 3 {
            let value: u16 = if digits.is_empty() { 0 } else { digits.parse().unwrap_or(u16::MAX) };
            if value <= 100 {
                return Some(value as u8);
            }
        }
    }
    None
}

/// A blocking client for one judge.
pub struct JudgeClient {
    config: JudgeConfig,
    endpoint: String,
    agent: ureq::Agent,
}

impl JudgeClient {
    pub fn new(config: JudgeConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(config.timeout)
            .user_agent(concat!("llmfs/", env!("CARGO_PKG_VERSION")))
            .build();
        let endpoint = config.kind.endpoint(&config.url);
        Self { config, endpoint, agent }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The JSON request for `prompt`: one user message; temperature 0 and seed 123 (Ollama: in
    /// `options`, with `num_ctx` 2048, and `stream: false`).
    pub fn request_body(&self, prompt: &str) -> Value {
        let messages = json!([{ "role": "user", "content": prompt }]);
        match self.config.kind {
            JudgeKind::Ollama => json!({
                "model": self.config.model,
                "messages": messages,
                "stream": false,
                "options": { "temperature": 0, "seed": SEED, "num_ctx": NUM_CTX },
            }),
            JudgeKind::OpenAi => json!({
                "model": self.config.model,
                "messages": messages,
                "temperature": 0,
                "seed": SEED,
            }),
        }
    }

    /// Asks the judge, retrying timeouts, dropped connections and 5xx with exponential backoff.
    pub fn ask(&self, prompt: &str) -> Result<String, JudgeError> {
        let body = self.request_body(prompt).to_string();
        let backoff = Backoff { retries: self.config.retries, first_wait: self.config.first_backoff };
        backoff.run(|| self.try_once(&body), |_, _, _| {}).map_err(|(error, attempts)| with_attempts(error, attempts))
    }

    fn try_once(&self, body: &str) -> Result<String, Attempt<JudgeError>> {
        let mut request = self.agent.post(&self.endpoint).set("Content-Type", "application/json");
        if let Some(key) = self.config.api_key.as_deref().filter(|k| !k.is_empty()) {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match request.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                let error = JudgeError::Status {
                    kind: self.config.kind,
                    url: self.endpoint.clone(),
                    model: self.config.model.clone(),
                    status,
                    body,
                    attempts: 1,
                };
                return Err(if status >= 500 { Attempt::Transient(error) } else { Attempt::Final(error) });
            }
            Err(ureq::Error::Transport(error)) => return Err(self.transport_error(&error)),
        };
        let mut text = String::new();
        if let Err(error) = response.into_reader().read_to_string(&mut text) {
            let message = format!("the reply was cut short: {error}");
            return Err(Attempt::Transient(JudgeError::Transport { url: self.endpoint.clone(), message, attempts: 1 }));
        }
        self.reply_content(&text).map_err(Attempt::Final)
    }

    /// Connection refused means no judge: final, and said plainly. Timeouts, resets and failed
    /// connections of other kinds are worth another try.
    fn transport_error(&self, error: &ureq::Transport) -> Attempt<JudgeError> {
        use ureq::ErrorKind::*;
        let refused = std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if error.kind() == ConnectionFailed && refused {
            return Attempt::Final(JudgeError::NotRunning {
                kind: self.config.kind,
                url: self.config.url.clone(),
                model: self.config.model.clone(),
            });
        }
        let mut message = error.kind().to_string();
        if let Some(detail) = error.message() {
            message = format!("{message}: {detail}");
        }
        if let Some(source) = std::error::Error::source(error) {
            message = format!("{message}: {source}");
        }
        let error_kind = error.kind();
        let error = JudgeError::Transport { url: self.endpoint.clone(), message, attempts: 1 };
        if matches!(error_kind, ConnectionFailed | Io | BadStatus | BadHeader) { Attempt::Transient(error) } else { Attempt::Final(error) }
    }

    /// The text of a chat reply: `message.content` (Ollama) or `choices[0].message.content`.
    fn reply_content(&self, text: &str) -> Result<String, JudgeError> {
        let bad = |message: String| JudgeError::BadReply { kind: self.config.kind, url: self.endpoint.clone(), message };
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let pointer = match self.config.kind {
            JudgeKind::Ollama => "/message/content",
            JudgeKind::OpenAi => "/choices/0/message/content",
        };
        match value.pointer(pointer) {
            Some(Value::String(content)) => Ok(content.clone()),
            _ => Err(bad(format!("no string at {pointer}"))),
        }
    }
}

fn with_attempts(mut error: JudgeError, tries: u32) -> JudgeError {
    if let JudgeError::Status { attempts, .. } | JudgeError::Transport { attempts, .. } = &mut error {
        *attempts = tries;
    }
    error
}

/// The judge's verdict on one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedRecord {
    /// Position in the responses file.
    pub index: usize,
    /// [`parse_score`] of the reply; `None` when it has no number in 0..=100.
    pub score: Option<u8>,
    pub reply: String,
}

/// Everything a judge run found: `eval/judge.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeReport {
    pub judge: JudgeKind,
    pub url: String,
    pub model: String,
    /// The responses file that was judged.
    pub responses: Option<PathBuf>,
    /// Records judged.
    pub n: usize,
    /// Replies with a score.
    pub scored: usize,
    /// Replies without one.
    pub unparseable: usize,
    /// Mean of the scores; `None` when no reply had one.
    pub mean_score: Option<f64>,
    pub seconds: f64,
    pub records: Vec<JudgedRecord>,
}

impl JudgeReport {
    /// The summary that `--json` prints: `{"mean_score","scored","unparseable"}`.
    pub fn summary(&self) -> Value {
        json!({ "mean_score": self.mean_score, "scored": self.scored, "unparseable": self.unparseable })
    }
}

/// Judges every record, `config.concurrency` at a time; `on_reply(done, total)` is called after
/// each reply. The first error stops the other workers (requests in flight finish) and is the
/// one returned: a dead judge gives one message, not one per worker.
pub fn judge_responses(
    records: &[ResponseRecord],
    config: &JudgeConfig,
    on_reply: impl Fn(usize, usize) + Sync,
) -> Result<JudgeReport, JudgeError> {
    let started = Instant::now();
    let client = JudgeClient::new(config.clone());
    let replies: Vec<Mutex<Option<String>>> = records.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<JudgeError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..config.concurrency.clamp(1, records.len().max(1)) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(record) = records.get(index) else { break };
                    match client.ask(&judge_prompt(record)) {
                        Ok(reply) => {
                            *lock(&replies[index]) = Some(reply);
                            on_reply(done.fetch_add(1, Ordering::SeqCst) + 1, records.len());
                        }
                        Err(error) => {
                            stop.store(true, Ordering::SeqCst);
                            lock(&first_error).get_or_insert(error);
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = first_error.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()) {
        return Err(error);
    }
    let judged: Vec<JudgedRecord> = replies
        .into_iter()
        .enumerate()
        .map(|(index, reply)| {
            let reply = reply.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()).unwrap_or_default();
            JudgedRecord { index, score: parse_score(&reply), reply }
        })
        .collect();
    let scores: Vec<f64> = judged.iter().filter_map(|r| r.score).map(f64::from).collect();
    Ok(JudgeReport {
        judge: config.kind,
        url: client.endpoint().to_string(),
        model: config.model.clone(),
        responses: None,
        n: judged.len(),
        scored: scores.len(),
        unparseable: judged.len() - scores.len(),
        mean_score: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        seconds: started.elapsed().as_secs_f64(),
        records: judged,
    })
}

/// A worker that panicked must not hide the others' results.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the report goes by default: `RUN_DIR/eval/judge.json` with a run directory, else
/// `eval/judge.json` next to the responses file.
pub fn default_report_path(responses: &Path, run_dir: Option<&Path>) -> PathBuf {
    match run_dir {
        Some(run) => run.join(REPORT_FILE),
        None => responses.parent().unwrap_or(Path::new("")).join(REPORT_FILE),
    }
}

/// Writes the report as pretty JSON, atomically; creates the parent directory.
pub fn write_report(path: &Path, report: &JudgeReport) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    gpt::io::write_atomic(path, &to_pretty_json(report)?)?;
    Ok(())
}
