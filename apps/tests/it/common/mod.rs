//! Test support: the `llmfs` binary, the fixtures, and a loopback HTTP server that answers like the
//! Hugging Face hub's `resolve` endpoint.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use crate::common_http::{Reply, Request, Server};

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

/// A fake hub on 127.0.0.1 (on the tests' one loopback server, [`Server::start_fn`]):
/// `GET/HEAD /{repo}/resolve/{revision}/{file}` serves `files[repo][file]` with the headers hf-hub
/// reads (etag, x-repo-commit, content-range for Range requests). Like the real hub for LFS files,
/// `*.safetensors` are answered with a 302 to a "CDN" URL (absolute, on the same server,
/// `x-linked-etag` on the redirect) that serves the bytes.
/// `GET /api/{models|datasets}/{repo}/revision/{revision}` lists a repo's files (a data set repo's
/// key in `files` is `datasets/{repo}`; its parquet export, revision `refs/convert/parquet`, is
/// `datasets/{repo}@refs/convert/parquet`). Anything else is a 404. Stops when dropped.
pub struct FakeHub {
    pub url: String,
    /// Every request as `METHOD /path`, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// The `Range` header of every request that had one, as `path range`.
    pub ranges: Arc<Mutex<Vec<String>>>,
    _server: Server,
}

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The branch of the hub's parquet export; a repo key `datasets/{repo}@refs/convert/parquet`
/// holds its files.
pub const PARQUET_EXPORT: &str = "refs/convert/parquet";

impl FakeHub {
    /// `repos`: repo id → (file name → local path).
    pub fn start(repos: HashMap<String, HashMap<String, PathBuf>>) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (log, range_log) = (requests.clone(), ranges.clone());
        let server = Server::start_fn(move |request| {
            log.lock().unwrap().push(format!("{} {}", request.method, request.path));
            if let Some(range) = request.headers.get("range") {
                range_log.lock().unwrap().push(format!("{} {range}", request.path));
            }
            hub_reply(request, &repos)
        });
        Self { url: server.base.clone(), requests, ranges, _server: server }
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// The ETag the fake hub gives a file's bytes (hf-hub names the cached blob after it).
pub fn etag(bytes: &[u8]) -> String {
    let hash = gpt::io::stable_hash(bytes);
    format!("{hash:016x}{:08x}", bytes.len())
}

fn header(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

fn hub_reply(request: &Request, repos: &HashMap<String, HashMap<String, PathBuf>>) -> Reply {
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let raw = |status: &str, headers: Vec<(String, String)>, body: Vec<u8>| Reply::Raw {
        status: status.to_string(),
        headers,
        body,
        send_body: method != "HEAD",
    };
    // Gated repos (`meta-llama/*` on the real hub) answer 401 without the token `hf_test`.
    if path.contains("/meta-llama/") && request.headers.get("authorization").map(String::as_str) != Some("Bearer hf_test") {
        return raw("401 Unauthorized", Vec::new(), b"Access to model meta-llama is restricted".to_vec());
    }
    // The repo-info API: /api/{models|datasets}/{repo}/revision/{revision} lists the files.
    if let Some(info) = repo_info(path, repos) {
        return raw("200 OK", vec![header("Content-Type", "application/json")], info.into_bytes());
    }
    // The "CDN": /cdn/{repo}/{file}, bytes only.
    let cdn_file = path.strip_prefix("/cdn/").and_then(|rest| {
        let (repo, name) = rest.rsplit_once('/')?;
        repos.get(repo)?.get(name).cloned()
    });
    let resolved = path.split_once("/resolve/").and_then(|(repo, rest)| {
        let repo = repo.trim_start_matches('/');
        let (_revision, name) = rest.split_once('/')?;
        let file = repos.get(repo).and_then(|files| files.get(name)).or_else(|| repos.get(&format!("{repo}@{PARQUET_EXPORT}"))?.get(name))?;
        Some((repo.to_string(), name.to_string(), file.clone()))
    });
    let read = |file: &PathBuf| std::fs::read(file).map_err(|e| Reply::StatusBody(500, e.to_string().into_bytes()));
    if let Some((repo, name, file)) = &resolved
        && name.ends_with(".safetensors")
    {
        let bytes = match read(file) {
            Ok(bytes) => bytes,
            Err(reply) => return reply,
        };
        let host = request.headers.get("host").cloned().unwrap_or_default();
        let headers = vec![
            header("Location", format!("http://{host}/cdn/{repo}/{name}")),
            header("X-Repo-Commit", COMMIT),
            header("X-Linked-Etag", format!("\"{}\"", etag(&bytes))),
            header("X-Linked-Size", bytes.len()),
        ];
        return raw("302 Found", headers, Vec::new());
    }
    let Some(file) = cdn_file.or(resolved.map(|r| r.2)) else {
        return raw("404 Not Found", Vec::new(), b"Entry not found".to_vec());
    };
    let bytes = match read(&file) {
        Ok(bytes) => bytes,
        Err(reply) => return reply,
    };
    let size = bytes.len() as u64;
    let range = request.headers.get("range").and_then(|value| {
        let (start, end) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
        Some((start.parse().unwrap_or(0), end.parse().ok()))
    });
    let last = size.saturating_sub(1);
    let (status, start, end) = match range {
        Some((start, end)) => ("206 Partial Content", start, end.unwrap_or(last).min(last)),
        None => ("200 OK", 0, last),
    };
    let headers = vec![
        header("ETag", format!("\"{}\"", etag(&bytes))),
        header("X-Repo-Commit", COMMIT),
        header("Content-Range", format!("bytes {start}-{end}/{size}")),
    ];
    let body = bytes.get(start as usize..(end + 1).min(size) as usize).unwrap_or_default().to_vec();
    raw(status, headers, body)
}

/// The JSON of `GET /api/models/{repo}/revision/{rev}` (repo key `{repo}`) or
/// `/api/datasets/{repo}/revision/{rev}` (repo key `datasets/{repo}`), as the hub answers it:
/// the commit and the files (`siblings`).
fn repo_info(path: &str, repos: &HashMap<String, HashMap<String, PathBuf>>) -> Option<String> {
    let rest = path.strip_prefix("/api/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (repo, revision) = rest.rsplit_once("/revision/")?;
    let key = match kind {
        "models" => repo.to_string(),
        "datasets" | "spaces" => format!("{kind}/{repo}"),
        _ => return None,
    };
    // The parquet export is a branch of its own: `{key}@refs/convert/parquet`.
    let files = if revision.replace("%2F", "/") == PARQUET_EXPORT { repos.get(&format!("{key}@{PARQUET_EXPORT}"))? } else { repos.get(&key)? };
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let siblings: Vec<serde_json::Value> = names.iter().map(|n| serde_json::json!({ "rfilename": n })).collect();
    Some(serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings }).to_string())
}

/// The Llama-family fixture served as one repo, with its tokenizer files.
pub fn llama_repo() -> HashMap<String, PathBuf> {
    ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
        .into_iter()
        .map(|f| (f.to_string(), fixtures().join("llama-tiny").join(f)))
        .collect()
}

/// The fixture model served as one repo.
pub fn tiny_repo() -> HashMap<String, PathBuf> {
    ["config.json", "model.safetensors", "generation_config.json"]
        .into_iter()
        .map(|f| (f.to_string(), tiny_model_dir().join(f)))
        .collect()
}

/// A Python that imports `modules` (e.g. "torch, transformers"): $LLMFS_PYTHON, else the benchmark venv.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("LLMFS_PYTHON").map(PathBuf::from).into_iter().chain(
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/llmfs-torch-venv/bin/python")),
    );
    candidates.into_iter().find(|python| {
        Command::new(python).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success())
    })
}

/// `llmfs logits` of `ids` (comma-separated) for `--model model`, read back.
pub fn logits(home: &std::path::Path, model: &std::path::Path, ids: &str, out: &std::path::Path) -> Vec<f32> {
    let result = run(llmfs(home).args(["logits", "--device", "cpu", "--ids", ids, "--model"]).arg(model).arg("--out").arg(out));
    assert!(result.status.success(), "{}", stderr(&result));
    let bytes = std::fs::read(out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
