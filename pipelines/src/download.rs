//! Fetching data files: HTTP(S) downloads with retries and a progress bar, or copies of local files.
//! Every data set goes through here (SMS spam zip, instruction JSON, HellaSwag jsonl, FineWeb, ...).
//!
//! The destination is written as a temporary file next to it, synced, then renamed into place: a
//! reader (or a later run) sees no file or the complete one, never half of one.
//!
//! ```no_run
//! # fn main() -> Result<(), pipelines::download::DownloadError> {
//! use std::path::Path;
//! let zip = pipelines::download::fetch_cached("https://example.com/data.zip", Path::new("data/data.zip"))?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpt::io::replace_atomically;
use indicatif::{ProgressBar, ProgressStyle};

use crate::retry::{Attempt, Backoff};

/// How many times a failed request is tried again: after timeouts, connection errors, a body cut
/// short, and HTTP 5xx. Other HTTP errors (4xx) are final at once.
pub const RETRIES: u32 = 3;

/// The wait before the first retry, doubled before each next one (0.5 s, 1 s, 2 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence while reading (not the whole transfer: big files take as long as they take).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("llmfs/", env!("CARGO_PKG_VERSION"));

/// Why a file could not be fetched. Every message names the URL or file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an HTTP error status.
    #[error("cannot download {url}: the server answered HTTP {status} {status_text}{}", tries(*attempts))]
    Status { url: String, status: u16, status_text: String, attempts: u32 },
    /// No usable answer: DNS, connection, timeout, TLS, a body cut short, a malformed URL, ...
    #[error("cannot download {url}: {message}{}", tries(*attempts))]
    Transport { url: String, message: String, attempts: u32 },
    /// A local source could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The destination could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
}

impl DownloadError {
    /// The same error, saying how many tries it took.
    fn after(mut self, tries: u32) -> Self {
        if let DownloadError::Status { attempts, .. } | DownloadError::Transport { attempts, .. } = &mut self {
            *attempts = tries;
        }
        self
    }
}

fn tries(attempts: u32) -> String {
    if attempts > 1 { format!(" (tried {attempts} times)") } else { String::new() }
}

/// The local file a source names, if it is one: a `file://` URL (no percent-decoding) or a plain
/// path (anything without `scheme://`). `None` for `http://`, `https://` and other URLs.
pub fn local_path(source: &str) -> Option<PathBuf> {
    if let Some(rest) = source.strip_prefix("file://") {
        return Some(PathBuf::from(rest.strip_prefix("localhost").unwrap_or(rest)));
    }
    (!source.contains("://")).then(|| PathBuf::from(source))
}

/// Fetches `source` (an http(s) URL, a `file://` URL or a local path) into `dest`, replacing it.
/// The parent directory is created. HTTP requests are retried [`RETRIES`] times with exponential
/// backoff on transient failures; a progress bar is drawn on stderr when it is a terminal.
pub fn download_to(source: &str, dest: &Path) -> Result<(), DownloadError> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| DownloadError::Write { path: parent.to_path_buf(), error })?;
    }
    if let Some(path) = local_path(source) {
        return copy_local(&path, dest);
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .build();
    let backoff = Backoff { retries: RETRIES, first_wait: FIRST_BACKOFF };
    backoff
        .run(
            || try_download(&agent, source, dest),
            |error, attempt, wait| eprintln!("{error} (try {attempt} of {}); retrying in {:.1} s", RETRIES + 1, wait.as_secs_f64()),
        )
        .map_err(|(error, attempts)| error.after(attempts))
}

/// Returns a local copy of `source`: `cache_path` when that file is already there (whatever its
/// origin: delete it to download again), else downloads it there first ([`download_to`]).
/// A local source (a path or `file://` URL) is returned as it is, neither copied nor cached.
pub fn fetch_cached(source: &str, cache_path: &Path) -> Result<PathBuf, DownloadError> {
    if let Some(path) = local_path(source) {
        return match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(DownloadError::Read { path, error: io::Error::other("not a file") }),
            Err(error) => Err(DownloadError::Read { path, error }),
        };
    }
    if !cache_path.is_file() {
        download_to(source, cache_path)?;
    }
    Ok(cache_path.to_path_buf())
}

/// The outcome of one failed try: worth another one, or not.
/// Errors outside the transfer itself (creating, syncing, renaming the file) are final.
impl From<DownloadError> for Attempt<DownloadError> {
    fn from(error: DownloadError) -> Self {
        Attempt::Final(error)
    }
}

/// One try; errors say `attempts: 1` ([`download_to`] counts).
fn try_download(agent: &ureq::Agent, url: &str, dest: &Path) -> Result<(), Attempt<DownloadError>> {
    let transport = |message: String| DownloadError::Transport { url: url.to_string(), message, attempts: 1 };
    let response = match agent.get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, response)) => {
            let error = DownloadError::Status {
                url: url.to_string(),
                status,
                status_text: response.status_text().to_string(),
                attempts: 1,
            };
            return Err(if status >= 500 { Attempt::Transient(error) } else { Attempt::Final(error) });
        }
        Err(ureq::Error::Transport(error)) => {
            use ureq::ErrorKind::*;
            let transient = matches!(error.kind(), Dns | ConnectionFailed | Io | BadStatus | ProxyConnect);
            let error = transport(describe(&error, url));
            return Err(if transient { Attempt::Transient(error) } else { Attempt::Final(error) });
        }
    };
    let expected_len = response.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    let progress = progress_bar(dest, expected_len);
    let result = write_via_temp(dest, |file| {
        let mut body = response.into_reader();
        let mut buffer = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Attempt::Transient(transport(format!(
                        "the connection failed after {received} bytes: {e}"
                    ))));
                }
            };
            file.write_all(&buffer[..n])
                .map_err(|error| Attempt::Final(DownloadError::Write { path: dest.to_path_buf(), error }))?;
            received += n as u64;
            progress.set_position(received);
        }
        match expected_len {
            Some(expected) if expected != received => {
                Err(Attempt::Transient(transport(format!("the body ended after {received} of {expected} bytes"))))
            }
            _ => Ok(()),
        }
    });
    progress.finish_and_clear();
    result
}

/// A transport error without the requested URL (ureq's Display starts with it; ours says it once),
/// but with the URL that failed when a redirect led elsewhere.
fn describe(error: &ureq::Transport, url: &str) -> String {
    let mut text = error.kind().to_string();
    if let Some(message) = error.message() {
        text = format!("{text}: {message}");
    }
    if let Some(source) = std::error::Error::source(error) {
        text = format!("{text}: {source}");
    }
    if let Some(failed) = error.url().filter(|failed| failed.as_str() != url) {
        text = format!("{text} (at {failed})");
    }
    text
}

fn copy_local(path: &Path, dest: &Path) -> Result<(), DownloadError> {
    let read_error = |error| DownloadError::Read { path: path.to_path_buf(), error };
    let mut input = File::open(path).map_err(read_error)?;
    write_via_temp(dest, |file| io::copy(&mut input, file).map(|_| ()).map_err(read_error))
}

/// Creates a temporary file next to `dest`, lets `fill` write it, and puts it in place atomically
/// ([`gpt::io::replace_atomically`]). On any error `dest` is left as it was.
fn write_via_temp<E: From<DownloadError>>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<(), E>) -> Result<(), E> {
    let write_error = |error| E::from(DownloadError::Write { path: dest.to_path_buf(), error });
    replace_atomically(dest, |tmp| fill(&mut File::create(tmp).map_err(write_error)?), write_error)
}

/// A byte progress bar named after `dest` on stderr when it is a terminal, else a hidden one.
fn progress_bar(dest: &Path, len: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (ProgressBar::new(len), "{msg} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}"),
        None => (ProgressBar::no_length(), "{msg} {spinner} {bytes} {bytes_per_sec}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    bar
}
