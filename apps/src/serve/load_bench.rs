//! `llmfs bench serve`: the server under load. N concurrent clients stream completions from a
//! server in this process (loopback only) for a fixed time, once with one request decoded at a
//! time (the baseline) and once with continuous batching; reports requests/s, tokens/s, latency
//! percentiles and whether every stream completed.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::LocalServer;
use crate::runtime::RuntimeArgs;

#[derive(Debug, Clone)]
pub struct Options {
    pub model: String,
    pub clients: usize,
    pub seconds: f64,
    pub max_tokens: usize,
    /// What `--threads` said (reported only; the pool is set once per process).
    pub threads: Option<usize>,
}

/// What one client saw of one request.
struct Sample {
    latency: f64,
    first_token: Option<f64>,
    tokens: usize,
    completed: bool,
}

/// Streams one completion; `completed` when the stream ended with a finish reason and `[DONE]`.
fn one_request(agent: &ureq::Agent, url: &str, body: &Value) -> Sample {
    let start = Instant::now();
    let mut sample = Sample { latency: 0.0, first_token: None, tokens: 0, completed: false };
    let Ok(response) = agent.post(url).set("content-type", "application/json").send_string(&body.to_string()) else {
        sample.latency = start.elapsed().as_secs_f64();
        return sample;
    };
    let mut finished = false;
    for line in BufReader::new(response.into_reader()).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            sample.completed = finished;
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { break };
        let choice = &chunk["choices"][0];
        if choice["text"].as_str().is_some_and(|t| !t.is_empty()) {
            sample.first_token.get_or_insert(start.elapsed().as_secs_f64());
            sample.tokens += 1;
        }
        finished |= choice["finish_reason"].is_string();
    }
    sample.latency = start.elapsed().as_secs_f64();
    sample
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `clients` threads sending requests back to back against a fresh server for `seconds`.
fn load(options: &Options, runtime: &RuntimeArgs, max_batch: usize) -> Result<Value> {
    let server = LocalServer::start(&options.model, runtime, pipelines::runs::WeightArgs::default(), options.clients, max_batch)?;
    let url = format!("http://{}/v1/completions", server.addr);
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let started = Instant::now();
    let samples: Vec<Sample> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.clients)
            .map(|client| {
                let url = url.clone();
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
                    let mut samples = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        // Prompts of different lengths, sampled with a per-request seed: rows of
                        // the batch start, run and stop at different times, as with real clients.
                        let prompt = format!("Client {client} asks question {n}:{}", " and then".repeat(client % 7));
                        let body = json!({ "model": options.model, "prompt": prompt, "max_tokens": options.max_tokens,
                            "temperature": 0.8, "top_p": 0.95, "seed": n * 100 + client as u64, "stream": true });
                        samples.push(one_request(&agent, &url, &body));
                        n += 1;
                    }
                    samples
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    drop(server);

    let completed: Vec<&Sample> = samples.iter().filter(|s| s.completed).collect();
    let mut latencies: Vec<f64> = completed.iter().map(|s| s.latency).collect();
    latencies.sort_by(f64::total_cmp);
    let mut first: Vec<f64> = completed.iter().filter_map(|s| s.first_token).collect();
    first.sort_by(f64::total_cmp);
    let tokens: usize = completed.iter().map(|s| s.tokens).sum();
    Ok(json!({
        "max_batch": max_batch, "requests": samples.len(), "completed": completed.len(),
        "incomplete": samples.len() - completed.len(), "seconds": elapsed,
        "requests_per_s": completed.len() as f64 / elapsed, "tokens_per_s": tokens as f64 / elapsed,
        "latency_s": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": latencies.last() },
        "first_token_s": { "p50": percentile(&first, 0.5), "p99": percentile(&first, 0.99) },
    }))
}

pub fn run(options: &Options, runtime: &RuntimeArgs) -> Result<Value> {
    anyhow::ensure!(options.clients > 0 && options.seconds > 0.0 && options.max_tokens > 0, "--clients, --seconds and --max-tokens must be positive");
    eprintln!("{} clients for {}s, one request at a time (baseline)...", options.clients, options.seconds);
    let solo = load(options, runtime, 1).context("the baseline run")?;
    eprintln!("{} clients for {}s, continuous batching (up to {} rows)...", options.clients, options.seconds, options.clients);
    let batched = load(options, runtime, options.clients).context("the batched run")?;
    let ratio = |key: &str| batched[key].as_f64().unwrap_or(0.0) / solo[key].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "bench": "llmfs_serve_load", "model": options.model, "backend": runtime.device.to_string(),
        "threads": options.threads, "clients": options.clients, "max_tokens": options.max_tokens,
        "one_at_a_time": solo, "batched": batched,
        "requests_per_s_ratio": ratio("requests_per_s"), "tokens_per_s_ratio": ratio("tokens_per_s"),
    }))
}
