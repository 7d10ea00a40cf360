//! MLflow through its REST API (`/api/2.0/mlflow/…`, no Python): the experiment got or created by
//! name, a run with tags, the resolved configuration as params, metrics in `log-batch` requests
//! (each with its step and time), artifacts through the server's artifact proxy
//! (`mlflow-artifacts:` roots, `mlflow server`'s default), and the run's end status. Requests are
//! retried with backoff (timeouts, refused connections, 5xx); a 4xx is final, with the server's
//! message.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::retry::{Attempt, Backoff};

/// Metrics a `log-batch` request may carry (MLflow's limit).
pub const MAX_METRICS: usize = 1000;
/// Params a `log-batch` request may carry.
pub const MAX_PARAMS: usize = 100;
/// The longest param value MLflow stores.
const MAX_PARAM_VALUE: usize = 6000;

/// One metric value as MLflow keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub step: i64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Finished,
    Failed,
    Killed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        }
    }
}

/// A client of one tracking server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    backoff: Backoff,
}

impl Client {
    /// `uri`: the server, `http://host:port` (a path prefix is kept).
    pub fn new(uri: &str, backoff: Backoff) -> Result<Self> {
        let base = uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("MLflow tracking URI {uri:?}: expected http://host:port or https://… (llmfs talks to a tracking server)");
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("llmfs/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self { base, agent, backoff })
    }

    pub fn uri(&self) -> &str {
        &self.base
    }

    /// One request to `url` (made by `send`), tried again after timeouts, refused connections,
    /// 429 and 5xx; `read` turns the answer into the value (a reply cut short is tried again).
    fn request<T>(
        &self,
        url: &str,
        send: impl Fn() -> std::result::Result<ureq::Response, ureq::Error>,
        read: impl Fn(ureq::Response) -> std::result::Result<T, Attempt<anyhow::Error>>,
    ) -> Result<T> {
        let try_once = || match send() {
            Ok(response) => read(response),
            Err(ureq::Error::Status(status, response)) => {
                let error = anyhow!("{url}: HTTP {status}: {}", server_message(&response.into_string().unwrap_or_default()));
                Err(if status >= 500 || status == 429 { Attempt::Transient(error) } else { Attempt::Final(error) })
            }
            Err(ureq::Error::Transport(error)) => Err(Attempt::Transient(anyhow!("cannot reach the MLflow server at {}: {error}", self.base))),
        };
        self.backoff.run(try_once, |_, _, _| {}).map_err(|(error, attempts)| if attempts > 1 { error.context(format!("after {attempts} attempts")) } else { error })
    }

    /// One REST call: `GET` with query parameters, or `POST` with a JSON body.
    fn call(&self, method: &str, endpoint: &str, query: &[(&str, &str)], body: Option<&Value>) -> Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let send = || {
            let mut request = self.agent.request(method, &url);
            for (key, value) in query {
                request = request.query(key, value);
            }
            match body {
                Some(body) => request.set("Content-Type", "application/json").send_string(&body.to_string()),
                None => request.call(),
            }
        };
        self.request(&url, send, |response| {
            let text = response.into_string().map_err(|e| Attempt::Transient(anyhow!("{url}: the reply was cut short: {e}")))?;
            Ok(if text.trim().is_empty() { json!({}) } else { serde_json::from_str(&text).map_err(|e| Attempt::Final(anyhow!("{url}: not JSON: {e}")))? })
        })
    }

    /// The id of experiment `name`, created when it does not exist.
    pub fn experiment_id(&self, name: &str) -> Result<String> {
        match self.call("GET", "experiments/get-by-name", &[("experiment_name", name)], None) {
            Ok(reply) => reply["experiment"]["experiment_id"].as_str().map(str::to_string).context("experiments/get-by-name: no experiment_id"),
            Err(error) if format!("{error:#}").contains("RESOURCE_DOES_NOT_EXIST") => {
                let reply = self.call("POST", "experiments/create", &[], Some(&json!({ "name": name })))?;
                reply["experiment_id"].as_str().map(str::to_string).context("experiments/create: no experiment_id")
            }
            Err(error) => Err(error),
        }
    }

    /// A new run in the experiment: its id and artifact URI.
    pub fn create_run(&self, experiment_id: &str, run_name: &str, start_ms: i64, tags: &[(String, String)]) -> Result<(String, String)> {
        let tags: Vec<Value> = tags.iter().map(|(key, value)| json!({ "key": key, "value": value })).collect();
        let body = json!({ "experiment_id": experiment_id, "run_name": run_name, "start_time": start_ms, "tags": tags });
        let reply = self.call("POST", "runs/create", &[], Some(&body))?;
        let info = &reply["run"]["info"];
        let id = info["run_id"].as_str().context("runs/create: no run_id")?;
        Ok((id.to_string(), info["artifact_uri"].as_str().unwrap_or_default().to_string()))
    }

    /// The run's status (`RUNNING`, `FINISHED` …).
    pub fn run_status(&self, run_id: &str) -> Result<String> {
        let reply = self.call("GET", "runs/get", &[("run_id", run_id)], None)?;
        Ok(reply["run"]["info"]["status"].as_str().unwrap_or_default().to_string())
    }

    /// Logs metrics and params, in as many requests as MLflow's limits need.
    pub fn log_batch(&self, run_id: &str, metrics: &[Metric], params: &[(String, String)]) -> Result<()> {
        for chunk in params.chunks(MAX_PARAMS) {
            let params: Vec<Value> = chunk.iter().map(|(key, value)| json!({ "key": key, "value": value })).collect();
            self.call("POST", "runs/log-batch", &[], Some(&json!({ "run_id": run_id, "params": params })))?;
        }
        for chunk in metrics.chunks(MAX_METRICS) {
            let metrics: Vec<Value> =
                chunk.iter().map(|m| json!({ "key": m.key, "value": finite(m.value), "timestamp": m.timestamp, "step": m.step })).collect();
            self.call("POST", "runs/log-batch", &[], Some(&json!({ "run_id": run_id, "metrics": metrics })))?;
        }
        Ok(())
    }

    /// Ends the run with `status`.
    pub fn end_run(&self, run_id: &str, status: Status, end_ms: i64) -> Result<()> {
        self.call("POST", "runs/update", &[], Some(&json!({ "run_id": run_id, "status": status.name(), "end_time": end_ms })))?;
        Ok(())
    }

    /// Uploads `bytes` as artifact `path` of a run whose artifact URI is `artifact_uri`, through
    /// the server's artifact proxy (`mlflow-artifacts:/…`).
    pub fn upload_artifact(&self, artifact_uri: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            bail!(
                "the run's artifacts go to {artifact_uri}, which only the server's own storage reaches: start `mlflow server` \
                 with artifact serving (its default, --serve-artifacts) for llmfs to upload them"
            );
        };
        // `mlflow-artifacts:/1/abc/artifacts` or `mlflow-artifacts://host:port/1/abc/artifacts`.
        let root = root.trim_start_matches("//");
        let root = if artifact_uri.starts_with("mlflow-artifacts://") { root.split_once('/').map_or("", |(_, rest)| rest) } else { root };
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{}/{}", self.base, root.trim_matches('/'), path);
        let send = || self.agent.put(&url).set("Content-Type", "application/octet-stream").send_bytes(bytes);
        self.request(&url, send, |_| Ok(()))
    }
}

/// MLflow's `{"error_code", "message"}`, or the body as it is (cut).
fn server_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(reply) if reply.get("error_code").is_some() => {
            format!("{}: {}", reply["error_code"].as_str().unwrap_or_default(), reply["message"].as_str().unwrap_or_default())
        }
        _ => body.chars().take(300).collect(),
    }
}

/// MLflow's JSON takes no NaN or infinity: they are sent as its string forms.
fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else if value.is_nan() {
        json!("NaN")
    } else if value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// `config` flattened to MLflow params: `a.b.c` keys, values as JSON text (strings bare), cut to
/// what MLflow stores.
pub fn params(config: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&key, value, out);
                }
            }
            Value::Null => {}
            Value::String(text) => out.push((prefix.to_string(), text.chars().take(MAX_PARAM_VALUE).collect())),
            other => out.push((prefix.to_string(), other.to_string().chars().take(MAX_PARAM_VALUE).collect())),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_flatten_to_params() {
        let config = json!({ "task": "spam", "train": { "lr": 5e-5, "epochs": 2, "optim": { "grad_clip": null } }, "labels": ["ham", "spam"] });
        let mut got = params(&config);
        got.sort();
        let expected: Vec<(String, String)> =
            vec![("labels".into(), "[\"ham\",\"spam\"]".into()), ("task".into(), "spam".into()), ("train.epochs".into(), "2".into()), ("train.lr".into(), "0.00005".into())];
        assert_eq!(got, expected);
        assert_eq!(finite(f64::NAN), json!("NaN"));
        assert!(Client::new("localhost:5000", Backoff { retries: 0, first_wait: Duration::ZERO }).is_err());
    }
}
