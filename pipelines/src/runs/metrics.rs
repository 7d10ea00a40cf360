//! `metrics.jsonl`: one event a line, appended while a run trains (the training loop, the final
//! evaluations, the tasks' hooks) and read by the plots, the monitor and `--resume`. One type,
//! [`MetricEvent`], for writing and reading.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gpt::io::write_atomic;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::now;

/// The metrics file of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl` (or `samples.jsonl`): the metrics of one split at one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    /// Unix time in seconds.
    pub time: f64,
    /// Global optimizer step.
    pub step: u64,
    /// Epoch, from 1.
    pub epoch: u64,
    /// `train`, `train_eval`, `val`, `test`, or a task's own (`hellaswag`).
    pub split: String,
    /// Absent for events that measure something else (a HellaSwag score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples_seen: Option<u64>,
    /// Any other keys, as written.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl MetricEvent {
    /// An event of `split` at optimizer step `step` of `epoch`, stamped now; the metrics are set
    /// on it next.
    pub fn new(step: usize, epoch: usize, split: impl Into<String>) -> Self {
        Self {
            time: now(),
            step: step as u64,
            epoch: epoch as u64,
            split: split.into(),
            loss: None,
            accuracy: None,
            lr: None,
            perplexity: None,
            tokens_per_s: None,
            examples_seen: None,
            extra: BTreeMap::new(),
        }
    }

    /// The event with a key of the task's own (`full`, `batch`, a sample's `text`, …).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

/// `run_dir/metrics.jsonl`.
pub fn metrics_path(run_dir: &Path) -> PathBuf {
    run_dir.join(METRICS_FILE)
}

/// Reads a `metrics.jsonl` file, in file order. Blank lines are skipped. The file may be growing
/// while we read it, so an unparsable last line (half written) is ignored; an unparsable line
/// elsewhere is an error naming the file and the line. Non-finite numbers (`null`, which is what
/// serde_json writes for NaN, or Python's `NaN`/`Infinity`) count as absent: such an optional
/// field is `None`, and an event whose `time` or `loss` is non-finite is left out.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricEvent>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&byte| byte == b'\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let mut events = Vec::with_capacity(lines.len());
    for (position, &(line_number, line)) in lines.iter().enumerate() {
        match parse_event(line) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(_) if position + 1 == lines.len() => {} // still being written
            Err(error) => bail!("{}, line {line_number}: {error}", path.display()),
        }
    }
    Ok(events)
}

/// One event, or `None` when its `time` or `loss` is not a finite number (an event without a
/// loss is kept: it measures something else).
fn parse_event(line: &[u8]) -> Result<Option<MetricEvent>> {
    let text = std::str::from_utf8(line).context("not UTF-8")?;
    let value: serde_json::Value = serde_json::from_str(&non_finite_to_null(text))?;
    let non_finite = |key: &str| value.get(key).is_some_and(serde_json::Value::is_null);
    if non_finite("time") || non_finite("loss") {
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(value)?))
}

/// Replaces Python's JSON extensions `NaN`, `Infinity` and `-Infinity` outside strings by `null`.
fn non_finite_to_null(text: &str) -> Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = rest.chars().next() {
        if !in_string
            && let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// Appends one event a line to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens the log for appending. `keep_through_step`: when resuming from a checkpoint at that
    /// step, events after it (logged by the interrupted run, about to be redone) are dropped first,
    /// and so is a half-written last line.
    pub fn open(path: &Path, keep_through_step: Option<usize>) -> Result<Self> {
        if let Some(step) = keep_through_step
            && path.exists()
        {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|event| event.get("step").and_then(Value::as_u64))
                        .is_some_and(|s| s as usize <= step)
                })
                .map(|line| format!("{line}\n"))
                .collect();
            write_atomic(path, kept.as_bytes())?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Writes one event as a line.
    pub fn log(&mut self, event: &MetricEvent) -> Result<()> {
        let line = serde_json::to_string(event)?;
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).with_context(|| format!("writing {}", self.path.display()))
    }
}
