//! What the monitor knows about a run directory: `run.json`, and `metrics.jsonl` and
//! `samples.jsonl` read incrementally as they grow ([`Tail`]); a line that does not parse is
//! counted and skipped, never fatal: a monitor must outlive whatever it watches.

use std::path::{Path, PathBuf};

use pipelines::runs::{MetricEvent, Tail};
use serde_json::Value;

/// One run directory as the monitor shows it.
#[derive(Debug)]
pub struct RunView {
    pub dir: PathBuf,
    pub name: String,
    /// `run.json`, once it exists.
    pub config: Option<Value>,
    pub events: Vec<MetricEvent>,
    /// `samples.jsonl` entries (`{"step","epoch","prompt","text"}`).
    pub samples: Vec<Value>,
    metrics: Tail,
    samples_tail: Tail,
}

impl RunView {
    pub fn new(dir: &Path) -> Self {
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        Self {
            dir: dir.to_path_buf(),
            name,
            config: None,
            events: Vec::new(),
            samples: Vec::new(),
            metrics: Tail::new(dir.join("metrics.jsonl")),
            samples_tail: Tail::new(dir.join("samples.jsonl")),
        }
    }

    /// Reads what was appended since the last refresh.
    pub fn refresh(&mut self) {
        if self.config.is_none() {
            self.config = std::fs::read(self.dir.join("run.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        }
        let (values, rewritten) = self.metrics.read_new();
        if rewritten {
            self.events.clear();
        }
        for value in values {
            match serde_json::from_value::<MetricEvent>(value) {
                Ok(event) => self.events.push(event),
                Err(_) => self.metrics.bad_lines += 1,
            }
        }
        let (values, rewritten) = self.samples_tail.read_new();
        if rewritten {
            self.samples.clear();
        }
        self.samples.extend(values);
    }

    pub fn bad_lines(&self) -> usize {
        self.metrics.bad_lines + self.samples_tail.bad_lines
    }

    /// (step, value) of `field` in the events of `split`, in log order.
    pub fn series(&self, split: &str, field: impl Fn(&MetricEvent) -> Option<f64>) -> Vec<(f64, f64)> {
        self.events
            .iter()
            .filter(|e| e.split == split)
            .filter_map(|e| field(e).filter(|v| v.is_finite()).map(|v| (e.step as f64, v)))
            .collect()
    }

    /// The last training event.
    pub fn last_train(&self) -> Option<&MetricEvent> {
        self.events.iter().rev().find(|e| e.split == "train")
    }

    /// Optimizer steps the run will make, from run.json (`train` config and example counts).
    pub fn total_steps(&self) -> Option<u64> {
        let config = self.config.as_ref()?;
        let train = config.get("train")?;
        if let Some(steps) = train.get("run_steps").and_then(Value::as_u64) {
            return Some(steps);
        }
        let examples = config.get("examples")?.get("train")?.as_u64()?;
        let batch = train.get("batch_size")?.as_u64()?.max(1);
        let accumulation = train.get("grad_accumulation").and_then(Value::as_u64).unwrap_or(1).max(1);
        let epochs = train.get("epochs")?.as_u64()?;
        let drop_last = train.get("drop_last").and_then(Value::as_bool).unwrap_or(true);
        let batches = if drop_last { examples / batch } else { examples.div_ceil(batch) };
        Some(epochs * batches.div_ceil(accumulation))
    }

    /// Seconds per optimizer step over the training events so far (for the ETA).
    pub fn seconds_per_step(&self) -> Option<f64> {
        let train: Vec<&MetricEvent> = self.events.iter().filter(|e| e.split == "train").collect();
        let (first, last) = (train.first()?, train.last()?);
        (last.step > first.step).then(|| (last.time - first.time) / (last.step - first.step) as f64)
    }

    /// Whether the run has its final model (it finished).
    pub fn finished(&self) -> bool {
        self.events.iter().any(|e| e.extra.get("final").is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_half_written_line_waits_and_a_rewritten_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let mut run = RunView::new(dir.path());
        run.refresh();
        assert!(run.events.is_empty() && run.config.is_none(), "a run that has not started");

        append(&metrics, "{\"time\":1,\"step\":1,\"epoch\":1,\"split\":\"train\",\"loss\":2.5}\n{\"time\":2,\"step\":2,\"ep");
        run.refresh();
        assert_eq!(run.events.len(), 1);
        append(&metrics, "och\":1,\"split\":\"train\",\"loss\":2.0}\nnot json\n");
        run.refresh();
        assert_eq!(run.series("train", |e| e.loss), [(1.0, 2.5), (2.0, 2.0)]);
        assert_eq!(run.bad_lines(), 1);

        // A resume rewrites the log shorter: read again from the start.
        std::fs::write(&metrics, "{\"time\":1,\"step\":1,\"epoch\":1,\"split\":\"train\",\"loss\":2.5}\n").unwrap();
        run.refresh();
        assert_eq!(run.events.len(), 1);
        assert_eq!(run.bad_lines(), 0);
    }

    #[test]
    fn total_steps_and_pace_come_from_run_json_and_the_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("run.json"),
            r#"{"train":{"epochs":2,"batch_size":8,"grad_accumulation":1,"drop_last":true},"examples":{"train":112}}"#,
        )
        .unwrap();
        append(&dir.path().join("metrics.jsonl"), "{\"time\":10,\"step\":1,\"epoch\":1,\"split\":\"train\",\"loss\":1}\n{\"time\":16,\"step\":4,\"epoch\":1,\"split\":\"train\",\"loss\":1}\n");
        let mut run = RunView::new(dir.path());
        run.refresh();
        assert_eq!(run.total_steps(), Some(28));
        assert_eq!(run.seconds_per_step(), Some(2.0));
        assert!(!run.finished());
    }
}
