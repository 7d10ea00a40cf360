//! `llmfs download` and `--model <repo id>` against a fake hub on 127.0.0.1 (hf-hub with a custom
//! HF_ENDPOINT), the HF cache layout under HF_HOME, and HF_HUB_OFFLINE.

use std::collections::HashMap;

use crate::common::*;

const REPO: &str = "llmfs-test/tiny-gpt2";
const GREEDY: [u64; 20] =
    [40276, 19634, 35005, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 50156, 3324, 3324, 3324, 3324];

fn generate_args(cmd: &mut std::process::Command, model: &str) {
    cmd.args(["generate", "--model", model, "--prompt", "Every effort moves you", "--max-new-tokens", "20", "--ignore-eos", "--json"]);
}

#[test]
fn download_fills_the_hf_cache_and_offline_runs_use_it() {
    let hub = FakeHub::start(HashMap::from([(REPO.to_string(), tiny_repo())]));
    let home = tempfile::tempdir().unwrap();

    let out = run(llmfs(home.path()).env("HF_ENDPOINT", &hub.url).args(["download", REPO]));
    assert!(out.status.success());
    let dir = std::path::PathBuf::from(stdout(&out).trim());
    let expected_dir = home.path().join("hub/models--llmfs-test--tiny-gpt2/snapshots").join(COMMIT);
    assert_eq!(dir, expected_dir);
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        assert_eq!(std::fs::read(dir.join(file)).unwrap(), std::fs::read(tiny_model_dir().join(file)).unwrap(), "{file}");
    }
    assert_eq!(std::fs::read_to_string(home.path().join("hub/models--llmfs-test--tiny-gpt2/refs/main")).unwrap(), COMMIT);

    // Offline, with the hub gone: the cache is enough.
    drop(hub);
    let mut cmd = llmfs(home.path());
    generate_args(cmd.env("HF_HUB_OFFLINE", "1"), REPO);
    let out = run(&mut cmd);
    assert!(out.status.success());
    assert_eq!(last_json(&out)["token_ids"], serde_json::json!(GREEDY));
}

/// Another process (or rank) downloading the weights holds hf-hub's lock on them for longer than
/// hf-hub waits for a lock (5 s): the download waits for it instead of failing, as every rank of
/// a data-parallel run does while the first downloads the model.
#[test]
fn a_download_waits_for_another_download_of_the_same_file() {
    let hub = FakeHub::start(HashMap::from([(REPO.to_string(), tiny_repo())]));
    let home = tempfile::tempdir().unwrap();
    let weights = std::fs::read(tiny_model_dir().join("model.safetensors")).unwrap();
    let blobs = home.path().join("hub/models--llmfs-test--tiny-gpt2/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let held = std::fs::File::create(blobs.join(format!("{}.lock", etag(&weights)))).unwrap();
    held.lock().unwrap();
    let other = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(6500));
        drop(held);
    });
    let started = std::time::Instant::now();
    let out = run(llmfs(home.path()).env("HF_ENDPOINT", &hub.url).args(["download", REPO]));
    other.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("model.safetensors: another download of it is under way"), "{}", stderr(&out));
    assert!(started.elapsed() >= std::time::Duration::from_millis(6500));
    let dir = std::path::PathBuf::from(stdout(&out).trim());
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights);
}

#[test]
fn model_flag_downloads_when_missing_then_reuses_the_cache() {
    let hub = FakeHub::start(HashMap::from([(REPO.to_string(), tiny_repo())]));
    let home = tempfile::tempdir().unwrap();
    let mut cmd = llmfs(home.path());
    generate_args(cmd.env("HF_ENDPOINT", &hub.url), REPO);
    let out = run(&mut cmd);
    assert!(out.status.success());
    assert_eq!(last_json(&out)["token_ids"], serde_json::json!(GREEDY));
    let first = hub.request_count();
    let log = hub.requests.lock().unwrap().join("\n");
    assert!(log.contains("GET /llmfs-test/tiny-gpt2/resolve/main/config.json"), "{log}");
    // The weights came through the LFS-style redirect, as on the real hub.
    assert!(log.contains("GET /cdn/llmfs-test/tiny-gpt2/model.safetensors"), "{log}");

    // Second run: everything is cached, the hub is not asked again.
    let out = run(&mut cmd);
    assert!(out.status.success());
    assert_eq!(hub.request_count(), first, "{:?}", hub.requests.lock().unwrap());
}

#[test]
fn sharded_repos_are_downloaded_shard_by_shard() {
    // Split the fixture into two shards plus an index, as the hub serves large models.
    let src = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny_model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors();
    let (a, b): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.contains("wte"));
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [a, b].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        for (tensor, _) in &part {
            weight_map.insert(tensor.clone(), name.clone().into());
        }
        safetensors::tensor::serialize_to_file(part, None, &src.path().join(&name)).unwrap();
    }
    std::fs::write(src.path().join("model.safetensors.index.json"), serde_json::json!({ "weight_map": weight_map }).to_string()).unwrap();
    let mut files: HashMap<String, std::path::PathBuf> = ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        .into_iter()
        .map(|f| (f.to_string(), src.path().join(f)))
        .collect();
    files.insert("config.json".into(), tiny_model_dir().join("config.json"));
    let hub = FakeHub::start(HashMap::from([("llmfs-test/sharded".to_string(), files)]));

    let home = tempfile::tempdir().unwrap();
    let mut cmd = llmfs(home.path());
    generate_args(cmd.env("HF_ENDPOINT", &hub.url), "llmfs-test/sharded");
    let out = run(&mut cmd);
    assert!(out.status.success());
    assert_eq!(last_json(&out)["token_ids"], serde_json::json!(GREEDY));
    let log = hub.requests.lock().unwrap().join("\n");
    assert!(log.contains("model-00002-of-00002.safetensors"), "{log}");

    // Offline afterwards: the cached shards are found.
    drop(log);
    let mut cmd = llmfs(home.path());
    generate_args(cmd.env("HF_HUB_OFFLINE", "1"), "llmfs-test/sharded");
    assert!(run(&mut cmd).status.success());
}

#[test]
fn offline_with_an_empty_cache_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = llmfs(home.path());
    generate_args(cmd.env("HF_HUB_OFFLINE", "1"), "gpt2");
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("`gpt2` is not in the Hugging Face cache"), "{err}");
    assert!(err.contains("llmfs download gpt2") && err.contains(&home.path().join("hub").display().to_string()), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "one message: {err}");
}

#[test]
fn unknown_repos_and_unreachable_hubs_are_clear_errors() {
    let hub = FakeHub::start(HashMap::from([(REPO.to_string(), tiny_repo())]));
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).env("HF_ENDPOINT", &hub.url).args(["download", "nobody/nothing"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nobody/nothing/config.json: not found"), "{}", stderr(&out));

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = run(llmfs(home.path()).env("HF_ENDPOINT", format!("http://127.0.0.1:{port}")).args(["download", REPO]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach") && err.contains("HF_HUB_OFFLINE"), "{err}");
    // Nothing half-downloaded is left looking complete.
    assert!(!home.path().join("hub/models--llmfs-test--tiny-gpt2/snapshots").exists());
}

#[test]
fn llama_family_repos_come_with_their_tokenizer_and_gated_ones_need_hf_token() {
    let repo = "meta-llama/Llama-tiny";
    let hub = FakeHub::start(HashMap::from([(repo.to_string(), llama_repo())]));
    let home = tempfile::tempdir().unwrap();
    let generate = |token: Option<&str>| {
        let mut cmd = llmfs(home.path());
        cmd.env("HF_ENDPOINT", &hub.url).args(["generate", "--model", repo, "--prompt", "Every effort moves you", "--max-new-tokens", "20", "--ignore-eos", "--json"]);
        if let Some(token) = token {
            cmd.env("HF_TOKEN", token);
        }
        run(&mut cmd)
    };
    let out = generate(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("access denied") && stderr(&out).contains("set HF_TOKEN"), "{}", stderr(&out));

    let out = generate(Some("hf_test"));
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("llama-tiny/expected.json")).unwrap()).unwrap();
    let json = last_json(&out);
    assert_eq!(json["prompt_ids"], expected["greedy_prompt_ids"], "the downloaded tokenizer.json encodes the prompt");
    assert_eq!(json["text"], expected["greedy_text"]);
    let log = hub.requests.lock().unwrap().join("\n");
    assert!(log.contains("GET /meta-llama/Llama-tiny/resolve/main/tokenizer.json"), "{log}");
}
