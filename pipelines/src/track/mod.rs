//! Experiment tracking beside the run directory, which stays the source of truth: a [`Mirror`]
//! reads what the run writes (`run.json`, `metrics.jsonl`, `samples.jsonl`) and writes it to
//! the trackers, on its own thread while a job runs ([`follow`]) or after the fact from the
//! files (`llmfs track`). Training never waits for a tracker: it only appends to its files.
//!
//! Trackers: TensorBoard event files ([`tensorboard`]; W&B through `wandb sync --sync-tensorboard`).

pub mod tensorboard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::runs::metrics::{MetricEvent, metrics_path};
use crate::runs::RUN_JSON;
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
}

impl Target {
    /// `tensorboard` (into `RUN_DIR/tensorboard`) or `tensorboard=DIR`.
    pub fn parse(text: &str, run_dir: &Path) -> Result<Self> {
        let (kind, place) = match text.split_once('=') {
            Some((kind, place)) => (kind.trim(), Some(place.trim())),
            None => (text.trim(), None),
        };
        match (kind, place) {
            ("tensorboard", None) => Ok(Self::TensorBoard(run_dir.join(TENSORBOARD_DIR))),
            ("tensorboard", Some(dir)) if !dir.is_empty() => Ok(Self::TensorBoard(PathBuf::from(dir))),
            _ => bail!("tracker {text:?}: expected tensorboard or tensorboard=DIR (MLflow is not supported yet)"),
        }
    }
}

/// A file read line by line as it grows, by byte offset; a file that shrank was rewritten
/// (a resumed run drops the steps it redoes) and is read again from the start.
#[derive(Default)]
struct Tail {
    offset: u64,
}

enum Lines {
    New(Vec<String>),
    /// The file is shorter than what was read: it was rewritten.
    Rewritten,
}

impl Tail {
    fn read(&mut self, path: &Path) -> Result<Lines> {
        let Ok(bytes) = std::fs::read(path) else { return Ok(Lines::New(Vec::new())) };
        if (bytes.len() as u64) < self.offset {
            self.offset = 0;
            return Ok(Lines::Rewritten);
        }
        let new = &bytes[self.offset as usize..];
        // Only whole lines: the writer may be in the middle of one.
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else { return Ok(Lines::New(Vec::new())) };
        self.offset += end as u64 + 1;
        let text = String::from_utf8_lossy(&new[..end]);
        Ok(Lines::New(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()))
    }
}

/// Mirrors one run directory into its trackers.
pub struct Mirror {
    run_dir: PathBuf,
    writers: Vec<EventWriter>,
    metrics: Tail,
    samples: Tail,
    config_written: bool,
    /// Metric events written so far.
    pub events: usize,
}

impl Mirror {
    /// New tracker files for `run_dir`. Each starts with a session start at step 0, so that what
    /// earlier files (an interrupted process, an earlier `llmfs track`) hold is replaced.
    pub fn new(run_dir: &Path, targets: &[Target]) -> Result<Self> {
        let mut writers = Vec::new();
        for target in targets {
            match target {
                Target::TensorBoard(dir) => {
                    let mut writer = EventWriter::create(dir)?;
                    writer.session_start(0, now())?;
                    writers.push(writer);
                }
            }
        }
        Ok(Self { run_dir: run_dir.to_path_buf(), writers, metrics: Tail::default(), samples: Tail::default(), config_written: false, events: 0 })
    }

    /// The event files written.
    pub fn files(&self) -> Vec<PathBuf> {
        self.writers.iter().map(|w| w.path().to_path_buf()).collect()
    }

    /// Writes what the run's files gained since the last call.
    pub fn poll(&mut self) -> Result<()> {
        if !self.config_written && let Ok(text) = std::fs::read_to_string(self.run_dir.join(RUN_JSON)) {
            let config: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", self.run_dir.join(RUN_JSON).display()))?;
            let pretty = serde_json::to_string_pretty(&config).unwrap_or_default();
            // Markdown: indented by four spaces, the JSON shows as code.
            let block: String = pretty.lines().map(|l| format!("    {l}\n")).collect();
            for writer in &mut self.writers {
                writer.text(0, now(), "config", &block)?;
            }
            self.config_written = true;
        }
        let metrics = metrics_path(&self.run_dir);
        let lines = match self.metrics.read(&metrics)? {
            Lines::New(lines) => lines,
            Lines::Rewritten => {
                // Replace everything: the file is read again from its start.
                for writer in &mut self.writers {
                    writer.session_start(0, now())?;
                }
                (self.config_written, self.samples) = (false, Tail::default());
                return self.poll();
            }
        };
        for line in lines {
            let event: MetricEvent = serde_json::from_str(&line).with_context(|| format!("{}: a line is not a metric event", metrics.display()))?;
            let scalars = scalars(&event);
            if !scalars.is_empty() {
                for writer in &mut self.writers {
                    writer.scalars(event.step, event.time, &scalars)?;
                }
                self.events += 1;
            }
        }
        let samples = self.run_dir.join("samples.jsonl");
        if let Lines::New(lines) = self.samples.read(&samples)? {
            for line in lines {
                let sample: Value = serde_json::from_str(&line).with_context(|| format!("{}: a line is not JSON", samples.display()))?;
                let text = format!(
                    "**prompt**\n\n    {}\n\n**response**\n\n    {}",
                    sample["prompt"].as_str().unwrap_or_default().replace('\n', "\n    "),
                    sample["text"].as_str().unwrap_or_default().replace('\n', "\n    ")
                );
                let step = sample["step"].as_u64().unwrap_or(0);
                for writer in &mut self.writers {
                    writer.text(step, sample["time"].as_f64().unwrap_or_else(now), "samples", &text)?;
                }
            }
        }
        for writer in &mut self.writers {
            writer.flush()?;
        }
        Ok(())
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

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A [`Mirror`] of a running job, on its own thread; [`Follower::finish`] mirrors the rest.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Mirror>>>,
}

/// Starts mirroring `run_dir` to `targets` while the job writes it.
pub fn follow(run_dir: &Path, targets: &[Target]) -> Result<Follower> {
    let mut mirror = Mirror::new(run_dir, targets)?;
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
    /// Stops following and mirrors what is left; returns the mirror (its files, its counts).
    pub fn finish(mut self) -> Result<Mirror> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().context("the tracking thread is gone")?;
        let mut mirror = thread.join().map_err(|_| anyhow::anyhow!("the tracking thread panicked"))??;
        mirror.poll()?;
        Ok(mirror)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && let Ok(Ok(mut mirror)) = thread.join()
        {
            let _ = mirror.poll();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::metrics::MetricsLog;

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
        let mut mirror = Mirror::new(run.path(), &[target]).unwrap();
        mirror.poll().unwrap();
        let mut later = MetricEvent::new(2, 1, "val");
        later.loss = Some(1.5);
        log.log(&later).unwrap();
        mirror.poll().unwrap();
        mirror.poll().unwrap();
        let events = tensorboard::read_events(&mirror.files()[0]).unwrap();
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
        let events = tensorboard::read_events(&mirror.files()[0]).unwrap();
        assert_eq!(starts(&events), 2);
        assert_eq!(events.last().unwrap().summary.as_ref().unwrap().value[0].tag, "train/loss", "step 1 again, step 2 gone");
        assert!(Target::parse("mlflow", run.path()).is_err());
    }
}
