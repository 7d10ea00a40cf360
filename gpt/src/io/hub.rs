//! Fetching models from the Hugging Face hub into the standard HF cache (through the `hf-hub`
//! crate), honouring `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{GptError, Result};
use crate::io::safetensors::{SHARD_INDEX, SINGLE_FILE, read_shard_index};

/// How to reach the hub; [`HubOptions::from_env`] reads the usual HF variables.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// `https://huggingface.co`, or a mirror (`HF_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The cache root (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    pub progress: bool,
    pub revision: String,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

impl HubOptions {
    pub fn from_env() -> Self {
        // HF_HUB_CACHE names the cache itself; otherwise it is $HF_HOME/hub (or the default).
        let cache = match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            Some(dir) => Cache::new(PathBuf::from(dir)),
            None => Cache::from_env(),
        };
        Self {
            endpoint: std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()),
            cache_dir: cache.path().clone(),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| cache.token()),
            offline: env_flag("HF_HUB_OFFLINE"),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            revision: "main".to_string(),
        }
    }

    /// The hub's base URL, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("https://huggingface.co").trim_end_matches('/')
    }

    /// An hf-hub client with these settings (endpoint, cache, token, progress bars, retries): the
    /// one way every download from the hub (models, data sets) is set up.
    pub fn api(&self) -> std::result::Result<Api, ApiError> {
        ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()))
            .with_endpoint(self.endpoint().to_string())
            .with_token(self.token.clone())
            .with_progress(self.progress)
            .with_retries(3)
            .build()
    }

    fn repo(&self, repo_id: &str) -> Repo {
        Repo::with_revision(repo_id.to_string(), RepoType::Model, self.revision.clone())
    }
}

/// Whether `text` is shaped like a hub repo id (`gpt2`, `openai-community/gpt2`).
pub fn is_repo_id(text: &str) -> bool {
    let part_ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !p.starts_with('.');
    let parts: Vec<&str> = text.split('/').collect();
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| part_ok(p))
}

/// Returns the local directory (an HF cache snapshot) holding `config.json` and the weights of
/// `repo_id`, downloading what is missing unless offline.
pub fn fetch_model(repo_id: &str, options: &HubOptions) -> Result<PathBuf> {
    if !is_repo_id(repo_id) {
        return Err(GptError::Hub(format!("{repo_id:?} is not a local directory or a Hugging Face repo id")));
    }
    if options.offline {
        return cached_model(repo_id, options);
    }
    let api = options.api().map_err(|e| hub_error(repo_id, "", options, e))?;
    let repo = api.repo(options.repo(repo_id));
    let get = |file: &str| get_shared(&repo, file).map_err(|e| hub_error(repo_id, file, options, e));
    // Files a repo may lack are asked for with the model's first download only: the cache keeps
    // no record of a file the hub does not have, so asking again would ask on every run.
    let first_download = Cache::new(options.cache_dir.clone()).repo(options.repo(repo_id)).get("config.json").is_none();
    let config = get("config.json")?;
    match get_shared(&repo, SINGLE_FILE) {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            let index = get_shared(&repo, SHARD_INDEX).map_err(|e| {
                if is_not_found(&e) {
                    GptError::Hub(format!(
                        "{repo_id}: the repo has neither {SINGLE_FILE} nor {SHARD_INDEX} (llmfs reads safetensors weights only)"
                    ))
                } else {
                    hub_error(repo_id, SHARD_INDEX, options, e)
                }
            })?;
            for shard in shard_files(&index)? {
                get(&shard)?;
            }
        }
        Err(e) => return Err(hub_error(repo_id, SINGLE_FILE, options, e)),
    }
    // Optional: sampling defaults and end-of-sequence ids, the tokenizer and its chat template
    // (GPT-2 uses its compiled-in BPE; the Llama family needs these).
    if first_download {
        for optional in ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
            let _ = get_shared(&repo, optional);
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// `repo.get(file)`: the cached file, else downloaded; and while another process or thread is
/// downloading the same file, the file once it is done. hf-hub locks a file while it downloads
/// it and gives up on a lock that another holds for 5 s: the ranks of a data-parallel run, which
/// all load the same model at once, would fail on any model that takes longer to download.
pub fn get_shared(repo: &ApiRepo, file: &str) -> std::result::Result<PathBuf, ApiError> {
    after_other_downloads(file, || repo.get(file))
}

/// Calls `get` again after each wait for the download that holds its lock (the next call finds
/// the file in the cache, or downloads it if that download failed), a few times at most.
fn after_other_downloads(file: &str, mut get: impl FnMut() -> std::result::Result<PathBuf, ApiError>) -> std::result::Result<PathBuf, ApiError> {
    const WAITS: usize = 8;
    let mut waits = 0;
    loop {
        match get() {
            Err(ApiError::LockAcquisition(lock)) if waits < WAITS => {
                if waits == 0 {
                    eprintln!("{file}: another download of it is under way ({}): waiting for it", lock.display());
                }
                // Blocks until the other download lets go (flock, as hf-hub locks).
                std::fs::File::open(&lock)?.lock()?;
                waits += 1;
            }
            result => return result,
        }
    }
}

/// Whether the hub answered 404.
pub fn is_not_found(error: &ApiError) -> bool {
    matches!(error, ApiError::RequestError(inner) if matches!(inner.as_ref(), ureq::Error::Status(404, _)))
}

/// The snapshot directory of a model already in the cache, or one clear message saying how to
/// get it there.
fn cached_model(repo_id: &str, options: &HubOptions) -> Result<PathBuf> {
    let cache = Cache::new(options.cache_dir.clone()).repo(options.repo(repo_id));
    let complete = |dir: &Path| {
        dir.join(SINGLE_FILE).is_file()
            || shard_files(&dir.join(SHARD_INDEX)).is_ok_and(|shards| shards.iter().all(|s| dir.join(s).is_file()))
    };
    let found = cache.get("config.json").and_then(|config| config.parent().map(Path::to_path_buf)).filter(|dir| complete(dir));
    found.ok_or_else(|| {
        GptError::Hub(format!(
            "model `{repo_id}` is not in the Hugging Face cache at {cache_dir} and HF_HUB_OFFLINE is set, so it \
             cannot be downloaded. Run `llmfs download {repo_id}` where there is network (with the same HF_HOME), \
             or copy a cache that has it to {cache_dir}, or pass `--model DIR` for a local directory with \
             config.json and {SINGLE_FILE}.",
            cache_dir = options.cache_dir.display(),
        ))
    })
}

/// The shard file names listed by a `model.safetensors.index.json`.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let mut files: Vec<String> = read_shard_index(index)?.into_values().collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// One clear message for a failed hub request about `repo_id` (and `file`, when not empty): not
/// found, access denied, unreachable (with what to do), or hf-hub's own words.
pub fn hub_error(repo_id: &str, file: &str, options: &HubOptions, error: ApiError) -> GptError {
    let endpoint = options.endpoint();
    let what = if file.is_empty() { repo_id.to_string() } else { format!("{repo_id}/{file}") };
    let detail = match &error {
        ApiError::RequestError(inner) => match inner.as_ref() {
            ureq::Error::Status(404, _) => format!("not found on {endpoint} (is the repo id right?)"),
            ureq::Error::Status(401 | 403, _) => format!(
                "access denied by {endpoint}: the repo is private or gated; set HF_TOKEN to a token that may read it"
            ),
            ureq::Error::Status(code, _) => format!("{endpoint} answered HTTP {code}"),
            ureq::Error::Transport(t) => format!(
                "cannot reach {endpoint} ({t}). Check the network, set HF_ENDPOINT to a mirror, or set \
                 HF_HUB_OFFLINE=1 to use only the local cache ({})",
                options.cache_dir.display()
            ),
        },
        other => other.to_string(),
    };
    GptError::Hub(format!("cannot download {what}: {detail}"))
}

/// The files of a data set repo at one commit, and a handle that downloads from that commit.
pub struct DatasetFiles {
    pub repo: hf_hub::api::sync::ApiRepo,
    /// The commit the listing is of (every download comes from it, so all files match).
    pub commit: String,
    /// Every file's path in the repo, sorted.
    pub files: Vec<String>,
}

/// Lists data set `dataset` at `revision` (a branch, tag, commit, or `refs/convert/parquet`, the
/// hub's parquet export) with the repo-info API. Needs the network: the caller says what to do
/// offline, and words the error ([`hub_error`]; a revision that does not exist is [`is_not_found`]).
pub fn list_dataset(dataset: &str, revision: &str, options: &HubOptions) -> std::result::Result<DatasetFiles, ApiError> {
    let api = options.api()?;
    let info = api.repo(Repo::with_revision(dataset.to_string(), RepoType::Dataset, revision.to_string())).info()?;
    let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    files.sort();
    let repo = api.repo(Repo::with_revision(dataset.to_string(), RepoType::Dataset, info.sha.clone()));
    Ok(DatasetFiles { repo, commit: info.sha, files })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_download_locked_by_another_is_waited_for_then_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (lock, blob) = (dir.path().join("blob.lock"), dir.path().join("blob"));
        // Another download holds the lock for 300 ms, then the file is there.
        let held = std::fs::File::create(&lock).unwrap();
        held.lock().unwrap();
        let (lock_path, blob_path) = (lock.clone(), blob.clone());
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&blob_path, b"weights").unwrap();
            drop(held);
        });
        let started = Instant::now();
        let mut calls = 0;
        let got = after_other_downloads("model.safetensors", || {
            calls += 1;
            // As hf-hub: the cached file if there, else the lock, which another holds.
            if blob.is_file() { Ok(blob.clone()) } else { Err(ApiError::LockAcquisition(lock_path.clone())) }
        })
        .unwrap();
        other.join().unwrap();
        assert_eq!((got, calls), (blob, 2));
        assert!(started.elapsed() >= Duration::from_millis(300));

        // Other errors are not waited on; a lock never given up ends after a few waits.
        let error = after_other_downloads("f", || Err(ApiError::InvalidResume)).unwrap_err();
        assert!(matches!(error, ApiError::InvalidResume));
        let mut calls = 0;
        let error = after_other_downloads("f", || {
            calls += 1;
            Err(ApiError::LockAcquisition(lock.clone()))
        })
        .unwrap_err();
        assert!(matches!(error, ApiError::LockAcquisition(_)) && calls == 9, "{calls} calls");
    }
}
