//! Test support: the `llmfs` binary, the fixtures, and a loopback HTTP server that answers like the
//! Hugging Face hub's `resolve` endpoint.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub fn tiny_model_dir() -> PathBuf {
    fixtures().join("gpt2-tiny")
}

/// The `llmfs` binary with a clean environment for HF variables and a private HF_HOME.
pub fn llmfs(hf_home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmfs"));
    for var in ["HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", hf_home).env("RAYON_NUM_THREADS", "2");
    cmd
}

/// `llmfs finetune instruct` of the fixture model on the 60 fixture records, on one CPU thread,
/// into `run_dir` (continuing it with `resume`), with the test's own `flags` (epochs, batch size…).
pub fn finetune_instruct(home: &Path, run_dir: &Path, resume: bool, flags: &[&str]) -> Command {
    let mut cmd = llmfs(home);
    cmd.args(["finetune", "instruct"])
        .args(flags)
        .args(["--plain", "--device", "cpu", "--threads", "1", "--model"])
        .arg(tiny_model_dir())
        .arg("--data")
        .arg(fixtures().join("data/instruction_data_60.json"))
        .arg("--run-dir")
        .arg(run_dir);
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("llmfs runs");
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last stdout line parsed as JSON.
pub fn last_json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(out)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A fake hub on 127.0.0.1: `GET/HEAD /{repo}/resolve/{revision}/{file}` serves `files[repo][file]`
/// with the headers hf-hub reads (etag, x-repo-commit, content-range for Range requests). Like the
/// real hub for LFS files, `*.safetensors` are answered with a 302 to a "CDN" URL (absolute, on
/// the same server, `x-linked-etag` on the redirect) that serves the bytes.
/// `GET /api/{models|datasets}/{repo}/revision/{revision}` lists a repo's files (a data set repo's
/// key in `files` is `datasets/{repo}`). Anything else is a 404. Stops when dropped.
pub struct FakeHub {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl FakeHub {
    /// `repos`: repo id → (file name → local path).
    pub fn start(repos: HashMap<String, HashMap<String, PathBuf>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (req, stop2, served2, base) = (requests.clone(), stop.clone(), served.clone(), url.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes and 10,000 connections, whatever the test does.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !stop2.load(Ordering::SeqCst) && std::time::Instant::now() < deadline && served2.load(Ordering::SeqCst) < 10_000 {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served2.fetch_add(1, Ordering::SeqCst);
                        let _ = handle(stream, &repos, &req, &base);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { url, requests, stop, served }
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn etag(bytes: &[u8]) -> String {
    let hash = gpt::io::stable_hash(bytes);
    format!("{hash:016x}{:08x}", bytes.len())
}

fn handle(stream: TcpStream, repos: &HashMap<String, HashMap<String, PathBuf>>, log: &Mutex<Vec<String>>, base: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (start, end) = value.trim().split_once('-').unwrap_or(("0", ""));
            range = Some((start.parse().unwrap_or(0), end.parse().ok()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {path}"));
    let mut stream = stream;
    // The repo-info API: /api/{models|datasets}/{repo}/revision/{revision} lists the files.
    if let Some(info) = repo_info(path, repos) {
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", info.len())?;
        return stream.write_all(info.as_bytes());
    }
    // The "CDN": /cdn/{repo}/{file}, bytes only.
    let cdn_file = path.strip_prefix("/cdn/").and_then(|rest| {
        let (repo, name) = rest.rsplit_once('/')?;
        repos.get(repo)?.get(name).cloned()
    });
    let resolved = path.split_once("/resolve/").and_then(|(repo, rest)| {
        let repo = repo.trim_start_matches('/');
        let (_revision, name) = rest.split_once('/')?;
        Some((repo.to_string(), name.to_string(), repos.get(repo)?.get(name).cloned()?))
    });
    if let Some((repo, name, file)) = &resolved
        && name.ends_with(".safetensors")
    {
        let bytes = std::fs::read(file)?;
        return write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {base}/cdn/{repo}/{name}\r\nX-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{}\"\r\nX-Linked-Size: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            etag(&bytes),
            bytes.len()
        );
    }
    let file = cdn_file.or(resolved.map(|r| r.2));
    let Some(file) = file else {
        let body = b"Entry not found";
        write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
        return stream.write_all(body);
    };
    let bytes = std::fs::read(&file)?;
    let size = bytes.len() as u64;
    let (status, body) = match range {
        Some((start, end)) => {
            let end = end.unwrap_or(size.saturating_sub(1)).min(size.saturating_sub(1));
            ("206 Partial Content", &bytes[start as usize..=end as usize])
        }
        None => ("200 OK", &bytes[..]),
    };
    let (start, end) = range.map(|(s, e)| (s, e.unwrap_or(size - 1).min(size - 1))).unwrap_or((0, size - 1));
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{end}/{size}\r\nConnection: close\r\n\r\n",
        body.len(),
        etag(&bytes)
    )?;
    if method != "HEAD" {
        stream.write_all(body)?;
    }
    let _ = stream.read(&mut [0u8; 0]);
    stream.flush()
}

/// The JSON of `GET /api/models/{repo}/revision/{rev}` (repo key `{repo}`) or
/// `/api/datasets/{repo}/revision/{rev}` (repo key `datasets/{repo}`), as the hub answers it:
/// the commit and the files (`siblings`).
fn repo_info(path: &str, repos: &HashMap<String, HashMap<String, PathBuf>>) -> Option<String> {
    let rest = path.strip_prefix("/api/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (repo, _revision) = rest.rsplit_once("/revision/")?;
    let key = match kind {
        "models" => repo.to_string(),
        "datasets" | "spaces" => format!("{kind}/{repo}"),
        _ => return None,
    };
    let mut names: Vec<&String> = repos.get(&key)?.keys().collect();
    names.sort();
    let siblings: Vec<serde_json::Value> = names.iter().map(|n| serde_json::json!({ "rfilename": n })).collect();
    Some(serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings }).to_string())
}

/// The fixture model served as one repo.
pub fn tiny_repo() -> HashMap<String, PathBuf> {
    ["config.json", "model.safetensors", "generation_config.json"]
        .into_iter()
        .map(|f| (f.to_string(), tiny_model_dir().join(f)))
        .collect()
}
