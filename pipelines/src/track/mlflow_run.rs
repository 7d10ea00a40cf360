//! A run directory mirrored into one MLflow run. Metric events are queued and sent in batches by
//! the mirror's thread; a server that is down or slow only delays them (they stay queued, tried
//! again at the next poll) and what is still unsent at the end is reported. What was sent is
//! counted per metric in `RUN_DIR/tracking.json` with the MLflow run id, so that `--resume` (or a
//! later `llmfs track`) continues the same MLflow run and sends only what it has not sent yet:
//! the events of a key are skipped in file order up to that count, which also drops the steps a
//! resumed run redoes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mlflow::{Client, Metric, Status, params};
use crate::retry::Backoff;

/// The file that remembers the MLflow run of a run directory.
pub const TRACKING_FILE: &str = "tracking.json";
/// Short: the mirror's thread tries again at its next poll anyway.
const BACKOFF: Backoff = Backoff { retries: 2, first_wait: Duration::from_millis(300) };

/// What `tracking.json` keeps of the MLflow run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub uri: String,
    pub experiment_id: Option<String>,
    pub run_id: Option<String>,
    #[serde(default)]
    pub artifact_uri: String,
    /// Values sent, per metric key.
    #[serde(default)]
    pub sent: BTreeMap<String, usize>,
    #[serde(default)]
    pub params_logged: bool,
}

/// Names of the MLflow side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub experiment: String,
    pub run_name: String,
    /// Upload the trained model (`model/`, `adapter/`) too.
    pub track_model: bool,
}

pub struct MlflowRun {
    client: Client,
    run_dir: PathBuf,
    naming: Naming,
    state: State,
    /// Values of each key seen in this reading of metrics.jsonl.
    seen: BTreeMap<String, usize>,
    pending: Vec<Metric>,
    pending_params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    /// The last failure, said once until a send succeeds again.
    failing: Option<String>,
}

impl MlflowRun {
    /// The mirror of `run_dir` into the server at `uri`: the MLflow run of `tracking.json` when it
    /// is of the same server, else a new one (created at the first send).
    pub fn new(run_dir: &Path, uri: &str, naming: Naming) -> Result<Self> {
        let client = Client::new(uri, BACKOFF)?;
        let path = run_dir.join(TRACKING_FILE);
        let saved: Option<State> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|file| serde_json::from_value(file["mlflow"].clone()).ok())
                .filter(|state: &State| state.uri == client.uri()),
            Err(_) => None,
        };
        let state = saved.unwrap_or_else(|| State { uri: client.uri().to_string(), ..State::default() });
        Ok(Self {
            client,
            run_dir: run_dir.to_path_buf(),
            naming,
            state,
            seen: BTreeMap::new(),
            pending: Vec::new(),
            pending_params: Vec::new(),
            tags: Vec::new(),
            failing: None,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Metric values not sent (yet).
    pub fn unsent(&self) -> usize {
        self.pending.len()
    }

    /// run.json: the params (once per MLflow run) and the tags of a new run.
    pub fn config(&mut self, run_json: &Value) {
        let config = &run_json["config"];
        if !self.state.params_logged {
            self.pending_params = params(config);
        }
        let tag = |key: &str, value: &Value| value.as_str().map(|v| (key.to_string(), v.to_string())).or_else(|| (!value.is_null()).then(|| (key.to_string(), value.to_string())));
        self.tags = [
            ("mlflow.source.name", &Value::String("llmfs".into())),
            ("llmfs.task", &config["task"]),
            ("llmfs.model", &config["model"]),
            ("llmfs.architecture", &config["architecture"]),
            ("llmfs.device", &config["device"]),
            ("llmfs.version", &run_json["llmfs_version"]),
            ("llmfs.precision", &Value::String("f32".into())),
            ("llmfs.world_size", &Value::from(1)),
        ]
        .into_iter()
        .filter_map(|(key, value)| tag(key, value))
        .collect();
    }

    /// The values of one metric event; those this MLflow run already has are skipped.
    pub fn scalars(&mut self, step: u64, time: f64, values: &[(String, f64)]) {
        for (key, value) in values {
            let seen = self.seen.entry(key.clone()).or_default();
            *seen += 1;
            if *seen > self.state.sent.get(key).copied().unwrap_or(0) {
                self.pending.push(Metric { key: key.clone(), value: *value, timestamp: (time * 1000.0) as i64, step: step as i64 });
            }
        }
    }

    /// metrics.jsonl was rewritten (a resume dropped the steps it redoes): it is read again.
    pub fn restart(&mut self) {
        self.seen.clear();
        self.pending.clear();
    }

    /// Sends what is queued; a failure keeps it queued (said once) and is not an error.
    pub fn flush(&mut self) -> Result<()> {
        match self.send() {
            Ok(()) => self.failing = None,
            Err(error) => {
                let message = format!("{error:#}");
                if self.failing.as_deref() != Some(&message) {
                    eprintln!("warning: MLflow: {message} ({} values queued, tried again while the run goes on)", self.pending.len());
                }
                self.failing = Some(message);
            }
        }
        Ok(())
    }

    fn send(&mut self) -> Result<()> {
        // Nothing yet (the run is starting): the MLflow run is made with the first values.
        if self.pending.is_empty() && self.pending_params.is_empty() {
            return Ok(());
        }
        let run_id = self.run_id()?;
        if !self.pending_params.is_empty() {
            self.client.log_batch(&run_id, &[], &self.pending_params)?;
            self.pending_params.clear();
            self.state.params_logged = true;
            self.save()?;
        }
        if !self.pending.is_empty() {
            self.client.log_batch(&run_id, &self.pending, &[])?;
            for metric in self.pending.drain(..) {
                *self.state.sent.entry(metric.key).or_default() += 1;
            }
            self.save()?;
        }
        Ok(())
    }

    /// The MLflow run, created (with its experiment) at the first send.
    fn run_id(&mut self) -> Result<String> {
        if let Some(id) = &self.state.run_id {
            return Ok(id.clone());
        }
        let experiment_id = self.client.experiment_id(&self.naming.experiment)?;
        let start = std::fs::metadata(self.run_dir.join(crate::runs::RUN_JSON))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(now_ms, |d| d.as_millis() as i64);
        let (run_id, artifact_uri) = self.client.create_run(&experiment_id, &self.naming.run_name, start, &self.tags)?;
        self.state.experiment_id = Some(experiment_id);
        self.state.run_id = Some(run_id.clone());
        self.state.artifact_uri = artifact_uri;
        self.save()?;
        Ok(run_id)
    }

    fn save(&self) -> Result<()> {
        let path = self.run_dir.join(TRACKING_FILE);
        let mut file: Value = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(|| serde_json::json!({}));
        file["mlflow"] = serde_json::to_value(&self.state)?;
        Ok(gpt::io::write_atomic(&path, serde_json::to_string_pretty(&file)?.as_bytes())?)
    }

    /// The last sends, the artifacts (plots, run.json, eval/*.json, samples.jsonl; the model with
    /// `track_model`) and the run's end status. Returns the values that could not be sent.
    pub fn finish(&mut self, status: Status) -> Result<usize> {
        self.send().with_context(|| format!("{} metric values are not sent; `llmfs track {} --to mlflow={}` sends them", self.pending.len(), self.run_dir.display(), self.state.uri))?;
        let run_id = self.run_id()?;
        for (path, name) in self.artifacts() {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            self.client.upload_artifact(&self.state.artifact_uri, &name, &bytes).with_context(|| format!("uploading {name}"))?;
        }
        self.client.end_run(&run_id, status, now_ms())?;
        Ok(self.pending.len())
    }

    /// (file, artifact path) of what a finished run uploads.
    fn artifacts(&self) -> Vec<(PathBuf, String)> {
        let mut files = Vec::new();
        for name in [crate::runs::RUN_JSON, "samples.jsonl", "metrics.jsonl"] {
            files.push(self.run_dir.join(name));
        }
        let mut folders = vec![("plots", "png"), ("eval", "json")];
        if self.naming.track_model {
            folders.extend([("model", ""), ("adapter", "")]);
        }
        for (folder, extension) in folders {
            if let Ok(entries) = std::fs::read_dir(self.run_dir.join(folder)) {
                let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
                found.retain(|p| extension.is_empty() || p.extension().is_some_and(|e| e == extension));
                found.sort();
                files.extend(found);
            }
        }
        files
            .into_iter()
            .filter(|p| p.is_file())
            .filter_map(|p| {
                let name = p.strip_prefix(&self.run_dir).ok()?.to_string_lossy().replace('\\', "/");
                Some((p, name))
            })
            .collect()
    }
}

/// Milliseconds since the epoch, as MLflow stamps things.
fn now_ms() -> i64 {
    (crate::runs::now() * 1000.0) as i64
}
