//! A JSON-lines file of a run (`metrics.jsonl`, `samples.jsonl`) read as it grows, by whoever
//! follows a run: `llmfs monitor` and the trackers. Lines are taken only once their newline is
//! there (a half-written last line waits for the next read); a file that shrinks (a resumed run
//! rewrites its log) is read again from the start; a line that is not a JSON object is counted
//! and skipped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::Value;

/// A JSON-lines file read as it grows.
#[derive(Debug, Default)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Lines that were not valid JSON objects.
    pub bad_lines: usize,
}

impl Tail {
    pub fn new(path: PathBuf) -> Self {
        Self { path, ..Self::default() }
    }

    /// New complete lines since the last call, and whether the file was rewritten (then the
    /// lines are the whole file again and the caller drops what it had).
    pub fn read_new(&mut self) -> (Vec<Value>, bool) {
        let Ok(mut file) = File::open(&self.path) else {
            return (Vec::new(), false);
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let rewritten = len < self.offset;
        if rewritten {
            self.offset = 0;
            self.partial.clear();
            self.bad_lines = 0;
        }
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return (Vec::new(), rewritten);
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return (Vec::new(), rewritten);
        };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        let mut values = Vec::new();
        for line in complete.split(|&b| b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Value>(line) {
                Ok(value) if value.is_object() => values.push(value),
                _ => self.bad_lines += 1,
            }
        }
        (values, rewritten)
    }
}
