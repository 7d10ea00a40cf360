//! TensorBoard event files, written as TensorFlow writes them: TFRecord framing (length, masked
//! CRC-32C of the length, the bytes, their masked CRC-32C) around protobuf `Event`s
//! (`tensorflow/core/util/event.proto`, `summary.proto`). Scalars are `simple_value`s, texts are
//! string tensors of the `text` plugin; a `SessionLog` START at step s makes TensorBoard drop what
//! an earlier writer logged at steps ≥ s (how a resumed run replaces its redone steps).
//! TensorBoard reads them, and so does `wandb sync --sync-tensorboard`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

/// `tensorflow.Event` (the fields written here).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "6")]
    pub session_log: Option<SessionLog>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto`: only a string scalar here.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {}

/// `tensorflow.SessionLog`.
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `tensorflow.DataType.DT_STRING`.
const DT_STRING: i32 = 7;
/// `SessionLog.SessionStatus.START`.
const SESSION_START: i32 = 1;

/// The CRC TFRecord stores: CRC-32C, rotated and offset so that a CRC of CRC-bearing data is not
/// itself a fixed point.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One event file, `events.out.tfevents.{seconds}.{host}.{pid}.llmfs` in a directory.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), starting with the version record.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
        // Nanoseconds keep two writers of one second apart; TensorBoard reads the files in name order.
        let path = dir.join(format!("events.out.tfevents.{}.{host}.{}.{}.llmfs", now.as_secs(), std::process::id(), now.subsec_nanos()));
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = Self { path, out: BufWriter::new(file) };
        let version = Event { wall_time: now.as_secs_f64(), file_version: Some("brain.Event:2".into()), ..Default::default() };
        writer.write(&version)?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.out.write_all(&record).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Scalars `(tag, value)` of one step, in one event.
    pub fn scalars(&mut self, step: u64, wall_time: f64, values: &[(String, f64)]) -> Result<()> {
        let value = values.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: Some(*v as f32), ..Default::default() }).collect();
        self.write(&Event { wall_time, step: step as i64, summary: Some(Summary { value }), ..Default::default() })
    }

    /// A text (Markdown) summary, as TensorBoard's text plugin stores it.
    pub fn text(&mut self, step: u64, wall_time: f64, tag: &str, text: &str) -> Result<()> {
        let tensor = TensorProto { dtype: DT_STRING, tensor_shape: Some(TensorShapeProto {}), string_val: vec![text.as_bytes().to_vec()] };
        let metadata = SummaryMetadata { plugin_data: Some(PluginData { plugin_name: "text".into(), content: Vec::new() }) };
        let value = SummaryValue { tag: tag.into(), tensor: Some(tensor), metadata: Some(metadata), ..Default::default() };
        self.write(&Event { wall_time, step: step as i64, summary: Some(Summary { value: vec![value] }), ..Default::default() })
    }

    /// A session (re)start at `step`: readers drop what earlier files logged at steps ≥ `step`.
    pub fn session_start(&mut self, step: u64, wall_time: f64) -> Result<()> {
        self.write(&Event { wall_time, step: step as i64, session_log: Some(SessionLog { status: SESSION_START }), ..Default::default() })
    }

    /// Makes everything written so far readable.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}

/// The events of a file, checking every record's CRCs; a cut last record (a crash mid-write) ends
/// the file. For tests and `llmfs track`'s check.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let stored = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap_or_default());
        anyhow::ensure!(masked_crc(len_bytes) == stored, "{}: byte {at}: bad length CRC", path.display());
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        let Some(end) = (at + 12).checked_add(len).filter(|&end| end + 4 <= bytes.len()) else { break };
        let data = &bytes[at + 12..end];
        let stored = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap_or_default());
        anyhow::ensure!(masked_crc(data) == stored, "{}: byte {at}: bad data CRC", path.display());
        events.push(Event::decode(data).with_context(|| format!("{}: byte {at}: not an Event", path.display()))?);
        at = end + 4;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFRecord's masked CRC of known inputs (values from TensorFlow's `crc32c.Mask`), and a file
    /// that reads back event for event, a cut last record tolerated.
    #[test]
    fn records_are_framed_as_tensorflow_frames_them() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283, "CRC-32C check value");
        assert_eq!(masked_crc(b""), 0u32.rotate_right(15).wrapping_add(0xa282_ead8));
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        writer.scalars(3, 10.5, &[("train/loss".into(), 2.5), ("train/lr".into(), 1e-4)]).unwrap();
        writer.text(0, 10.0, "config", "{\"a\": 1}").unwrap();
        writer.session_start(2, 11.0).unwrap();
        writer.flush().unwrap();
        let path = writer.path().to_path_buf();
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let values = &events[1].summary.as_ref().unwrap().value;
        assert_eq!((events[1].step, values[0].tag.as_str(), values[0].simple_value), (3, "train/loss", Some(2.5)));
        assert_eq!(values[1].simple_value, Some(1e-4f32));
        let text = &events[2].summary.as_ref().unwrap().value[0];
        assert_eq!(text.tensor.as_ref().unwrap().string_val[0], b"{\"a\": 1}");
        assert_eq!(text.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap().plugin_name, "text");
        assert_eq!(events[3].session_log.as_ref().unwrap().status, SESSION_START);
        // A crash in the middle of the last record: the records before it still read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 3);
    }
}
