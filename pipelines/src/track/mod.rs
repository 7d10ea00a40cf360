//! Experiment tracking beside the run directory, which stays the source of truth: a [`Mirror`]
//! reads what the run writes (`run.json`, `metrics.jsonl`, `samples.jsonl`) and writes it to
//! the trackers, on its own thread while a job runs ([`follow`]) or after the fact from the
//! files (`llmfs track`). Training never waits for a tracker: it only appends to its files.
//!
//! Trackers: TensorBoard event files ([`tensorboard`]; W&B through `wandb sync --sync-tensorboard`),
//! and MLflow through its REST API ([`mlflow`], [`mlflow_run`]).

pub mod mlflow;
pub mod mlflow_run;
pub mod tensorboard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::runs::metrics::{MetricEvent, metrics_path};
use crate::runs::{RUN_JSON, Tail, now};
use mlflow::Status;
use mlflow_run::{MlflowRun, Naming};
use tensorboard::EventWriter;

/// The default folder of `--track tensorboard` in a run directory.
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// How often a running job's files are read again.
const POLL: Duration = Duration::from_millis(500);

/// Where a run is mirrored to (`--track KIND[=WHERE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// TensorBoard event files in this directory.
    TensorBoard(PathBuf),
    /// An MLflow tracking server.
    Mlflow(String),
}

impl Target {
    /// `tensorboard` (into `RUN_DIR/tensorboard`), `tensorboard=DIR`, `mlflow` (the server of
    /// `$MLFLOW_TRACKING_URI`) or `mlflow=URI`.
    pub fn parse(text: &str, run_dir: &Path) -> Result<Self> {
        let (kind, place) = match text.split_once('=') {
            Some((kind, place)) => (kind.trim(), Some(place.trim())),
            None => (text.trim(), None),
        };
        match (kind, place) {
            ("tensorboard", None) => Ok(Self::TensorBoard(run_dir.join(TENSORBOARD_DIR))),
            ("tensorboard", Some(dir)) if !dir.is_empty() => Ok(Self::TensorBoard(PathBuf::from(dir))),
            ("mlflow", None) => match std::env::var("MLFLOW_TRACKING_URI").ok().filter(|u| !u.trim().is_empty()) {
                Some(uri) => Ok(Self::Mlflow(uri)),
                None => bail!("tracker \"mlflow\": name the server (mlflow=http://host:port) or set MLFLOW_TRACKING_URI"),
            },
            ("mlflow", Some(uri)) if !uri.is_empty() => Ok(Self::Mlflow(uri.to_string())),
            _ => bail!("tracker {text:?}: expected tensorboard[=DIR] or mlflow[=URI]"),
        }
    }
}

/// One tracker a [`Mirror`] writes to.
enum Sink {
    TensorBoard(EventWriter),
    Mlflow(Box<MlflowRun>),
}

impl Sink {
    fn config(&mut self, run_json: &Value) -> Result<()> {
        match self {
            Self::TensorBoard(writer) => {
                let pretty = serde_json::to_string_pretty(run_json).unwrap_or_default();
                // Markdown: indented by four spaces, the JSON shows as code.
                let block: String = pretty.lines().map(|l| format!("    {l}\n")).collect();
                writer.text(0, now(), "config", &block)
            }
            Self::Mlflow(run) => {
                run.config(run_json);
                Ok(())
            }
        }
    }

    fn scalars(&mut self, step: u64, time: f64, values: &[(String, f64)]) -> Result<()> {
        match self {
            Self::TensorBoard(writer) => writer.scalars(step, time, values),
            Self::Mlflow(run) => {
                run.scalars(step, time, values);
                Ok(())
            }
        }
    }

    fn text(&mut self, step: u64, time: f64, tag: &str, text: &str) -> Result<()> {
        match self {
            Self::TensorBoard(writer) => writer.text(step, time, tag, text),
            // The samples reach MLflow as the samples.jsonl artifact.
            Self::Mlflow(_) => Ok(()),
        }
    }

    /// The run's files were rewritten and are read again from their start.
    fn restart(&mut self) -> Result<()> {
        match self {
            Self::TensorBoard(writer) => writer.session_start(0, now()),
            Self::Mlflow(run) => {
                run.restart();
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self {
            Self::TensorBoard(writer) => writer.flush(),
            Self::Mlflow(run) => run.flush(),
        }
    }
}

/// Mirrors one run directory into its trackers.
pub struct Mirror {
    run_dir: PathBuf,
    sinks: Vec<Sink>,
    metrics: Tail,
    samples: Tail,
    config_written: bool,
    /// Metric events read so far.
    pub events: usize,
}

/// What a finished mirror did.
#[derive(Debug, Clone, Default)]
pub struct MirrorReport {
    pub events: usize,
    /// The TensorBoard event files written.
    pub files: Vec<PathBuf>,
    /// MLflow runs written: (server, run id).
    pub mlflow_runs: Vec<(String, String)>,
}

impl Mirror {
    /// The trackers of `run_dir`. A TensorBoard file starts with a session start at step 0, so that
    /// what earlier files (an interrupted process, an earlier `llmfs track`) hold is replaced; an
    /// MLflow run continues the one `tracking.json` names, if any.
    pub fn new(run_dir: &Path, targets: &[Target], naming: &Naming) -> Result<Self> {
        let mut sinks = Vec::new();
        for target in targets {
            match target {
                Target::TensorBoard(dir) => {
                    let mut writer = EventWriter::create(dir)?;
                    writer.session_start(0, now())?;
                    sinks.push(Sink::TensorBoard(writer));
                }
                Target::Mlflow(uri) => sinks.push(Sink::Mlflow(Box::new(MlflowRun::new(run_dir, uri, naming.clone())?))),
            }
        }
        let (metrics, samples) = (Tail::new(metrics_path(run_dir)), Tail::new(run_dir.join("samples.jsonl")));
        Ok(Self { run_dir: run_dir.to_path_buf(), sinks, metrics, samples, config_written: false, events: 0 })
    }

    /// Writes what the run's files gained since the last call.
    pub fn poll(&mut self) -> Result<()> {
        let (events, rewritten) = self.metrics.read_new();
        // Only the trainer writes these files: a line that does not parse is a fault to report.
        ensure!(self.metrics.bad_lines == 0, "{}: a line is not a metric event", metrics_path(&self.run_dir).display());
        if rewritten {
            // Read again from its start (a resume dropped the steps it redoes): replace everything.
            for sink in &mut self.sinks {
                sink.restart()?;
            }
            (self.config_written, self.samples) = (false, Tail::new(self.run_dir.join("samples.jsonl")));
        }
        if !self.config_written && let Ok(text) = std::fs::read_to_string(self.run_dir.join(RUN_JSON)) {
            let run_json: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", self.run_dir.join(RUN_JSON).display()))?;
            for sink in &mut self.sinks {
                sink.config(&run_json)?;
            }
            self.config_written = true;
        }
        for event in events {
            let event: MetricEvent = serde_json::from_value(event).with_context(|| format!("{}: a line is not a metric event", metrics_path(&self.run_dir).display()))?;
            let scalars = scalars(&event);
            if !scalars.is_empty() {
                for sink in &mut self.sinks {
                    sink.scalars(event.step, event.time, &scalars)?;
                }
                self.events += 1;
            }
        }
        let (samples, _) = self.samples.read_new();
        ensure!(self.samples.bad_lines == 0, "{}: a line is not JSON", self.run_dir.join("samples.jsonl").display());
        for sample in samples {
            let text = format!(
                "**prompt**\n\n    {}\n\n**response**\n\n    {}",
                sample["prompt"].as_str().unwrap_or_default().replace('\n', "\n    "),
                sample["text"].as_str().unwrap_or_default().replace('\n', "\n    ")
            );
            let step = sample["step"].as_u64().unwrap_or(0);
            for sink in &mut self.sinks {
                sink.text(step, sample["time"].as_f64().unwrap_or_else(now), "samples", &text)?;
            }
        }
        for sink in &mut self.sinks {
            sink.flush()?;
        }
        Ok(())
    }

    /// The last of the run's files, then each tracker's end: MLflow's artifacts and run status.
    /// A tracker that cannot finish is an error after the others have finished.
    pub fn finish(mut self, status: Status) -> Result<MirrorReport> {
        self.poll()?;
        let mut report = MirrorReport { events: self.events, ..MirrorReport::default() };
        let mut failures = Vec::new();
        for sink in &mut self.sinks {
            match sink {
                Sink::TensorBoard(writer) => report.files.push(writer.path().to_path_buf()),
                Sink::Mlflow(run) => match run.finish(status) {
                    Ok(_) => report.mlflow_runs.push((run.state().uri.clone(), run.state().run_id.clone().unwrap_or_default())),
                    Err(error) => failures.push(format!("MLflow: {error:#}")),
                },
            }
        }
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(report)
    }
}

/// An event's numbers as `split/name` scalars: loss, accuracy, lr, perplexity, tokens/s, and any
/// other numeric key (macro_f1, a HellaSwag score …); flags and texts are not scalars.
pub fn scalars(event: &MetricEvent) -> Vec<(String, f64)> {
    let known = [
        ("loss", event.loss),
        ("accuracy", event.accuracy),
        ("lr", event.lr),
        ("perplexity", event.perplexity),
        ("tokens_per_s", event.tokens_per_s),
        ("examples_seen", event.examples_seen.map(|n| n as f64)),
    ];
    let extra = event.extra.iter().filter(|(_, v)| v.is_number()).map(|(k, v)| (k.as_str(), v.as_f64()));
    known.into_iter().chain(extra).filter_map(|(name, value)| Some((format!("{}/{name}", event.split), value?))).collect()
}

/// A [`Mirror`] of a running job, on its own thread; [`Follower::finish`] mirrors the rest.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Mirror>>>,
}

/// Starts mirroring `run_dir` to `targets` while the job writes it.
pub fn follow(run_dir: &Path, targets: &[Target], naming: &Naming) -> Result<Follower> {
    let mut mirror = Mirror::new(run_dir, targets, naming)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("llmfs-track".into())
        .spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                mirror.poll()?;
                std::thread::sleep(POLL);
            }
            Ok(mirror)
        })
        .context("starting the tracking thread")?;
    Ok(Follower { stop, thread: Some(thread) })
}

impl Follower {
    /// Stops following, mirrors what is left and ends the trackers' runs with `status`.
    pub fn finish(mut self, status: Status) -> Result<MirrorReport> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().context("the tracking thread is gone")?;
        let mirror = thread.join().map_err(|_| anyhow::anyhow!("the tracking thread panicked"))??;
        mirror.finish(status)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && let Ok(Ok(mirror)) = thread.join()
        {
            let _ = mirror.finish(Status::Killed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::metrics::MetricsLog;

    fn files(mirror: &Mirror) -> Vec<PathBuf> {
        mirror.sinks.iter().filter_map(|s| if let Sink::TensorBoard(w) = s { Some(w.path().to_path_buf()) } else { None }).collect()
    }

    /// Every metric event becomes scalars at its step; a rewritten metrics file (a resume) is
    /// replayed after a session start that replaces what was written.
    #[test]
    fn a_run_directory_is_mirrored_event_for_event() {
        let run = tempfile::tempdir().unwrap();
        std::fs::write(run.path().join(RUN_JSON), r#"{"config": {"task": "spam"}}"#).unwrap();
        let mut log = MetricsLog::open(&metrics_path(run.path()), None).unwrap();
        let mut event = MetricEvent::new(1, 1, "train").with("macro_f1", 0.5).with("full", true);
        (event.loss, event.lr) = (Some(2.0), Some(1e-3));
        log.log(&event).unwrap();
        let target = Target::parse("tensorboard", run.path()).unwrap();
        assert_eq!(target, Target::TensorBoard(run.path().join("tensorboard")));
        let naming = Naming { experiment: "e".into(), run_name: "r".into(), track_model: false };
        let mut mirror = Mirror::new(run.path(), &[target], &naming).unwrap();
        mirror.poll().unwrap();
        let mut later = MetricEvent::new(2, 1, "val");
        later.loss = Some(1.5);
        log.log(&later).unwrap();
        mirror.poll().unwrap();
        mirror.poll().unwrap();
        let events = tensorboard::read_events(&files(&mirror)[0]).unwrap();
        let scalars: Vec<(i64, String, f32)> = events
            .iter()
            .flat_map(|e| e.summary.iter().flat_map(move |s| s.value.iter().filter_map(move |v| Some((e.step, v.tag.clone(), v.simple_value?)))))
            .collect();
        let expected =
            [(1, "train/loss".to_string(), 2.0), (1, "train/lr".into(), 1e-3), (1, "train/macro_f1".into(), 0.5), (2, "val/loss".into(), 1.5)];
        assert_eq!(scalars, expected);
        assert_eq!(mirror.events, 2);
        // A resume rewrites the file shorter: a session start, then the file again.
        let starts = |events: &[tensorboard::Event]| events.iter().filter(|e| e.session_log.is_some()).count();
        assert_eq!(starts(&events), 1);
        drop(log);
        MetricsLog::open(&metrics_path(run.path()), Some(1)).unwrap();
        mirror.poll().unwrap();
        let events = tensorboard::read_events(&files(&mirror)[0]).unwrap();
        assert_eq!(starts(&events), 2);
        assert_eq!(events.last().unwrap().summary.as_ref().unwrap().value[0].tag, "train/loss", "step 1 again, step 2 gone");
        assert_eq!(Target::parse("mlflow=http://127.0.0.1:5000", run.path()).unwrap(), Target::Mlflow("http://127.0.0.1:5000".into()));
        assert!(Target::parse("wandb", run.path()).is_err());
    }
}
