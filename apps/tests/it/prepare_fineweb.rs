//! `llmfs prepare fineweb` end to end: local parquet input, and a data set on a fake hub on
//! 127.0.0.1 (HF_ENDPOINT): file listing through the repo-info API, file-by-file downloads into
//! the HF cache, resume without downloading again. Shard bytes are checked against the output of
//! build-nanogpt's fineweb.py stored in tests/fixtures/fineweb_edu_shards.json.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use pipelines::data::shards::sha256_file;

const DATASET: &str = "llmfs-test/fineweb-edu";

fn sample() -> PathBuf {
    fixtures().join("data/fineweb_edu_sample.parquet")
}

/// sha256 of fineweb.py's shards of the fixture at 25,000 tokens a shard, by name.
fn reference_shards() -> Vec<(String, String)> {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("fineweb_edu_shards.json")).unwrap()).unwrap();
    let run = reference["runs"].as_array().unwrap().iter().find(|r| r["shard_size"] == 25_000 && r["max_docs"].is_null()).unwrap();
    let mut shards: Vec<(String, String)> = run["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["sha256"].as_str().unwrap().to_string()))
        .collect();
    shards.sort();
    shards
}

fn shard_hashes(dir: &Path) -> Vec<(String, String)> {
    let mut shards: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), sha256_file(&p).unwrap()))
        .collect();
    shards.sort();
    shards
}

#[test]
fn prepare_fineweb_from_a_local_file_matches_fineweb_py() {
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("shards");
    let out = run(llmfs(home.path())
        .args(["prepare", "fineweb", "--input"])
        .arg(sample())
        .arg("--out")
        .arg(&out_dir)
        .args(["--shard-size", "25000", "--workers", "2", "--json"]));
    assert!(out.status.success());
    assert_eq!(shard_hashes(&out_dir), reference_shards());
    let json = last_json(&out);
    assert_eq!((json["documents"].as_u64(), json["tokens"].as_u64()), (Some(300), Some(118_714)));
    assert_eq!(json["shards"].as_array().unwrap().len(), 5);
    assert_eq!(json["stop"], "end_of_input");
    assert!(json["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(stdout(&out).lines().count(), 1, "one JSON object on stdout");
    let messages = stderr(&out);
    assert!(messages.contains("5 shards (5 written now) with 118714 tokens from 300 documents"), "{messages}");
    assert!(messages.contains("tokens/s with 2 workers"), "{messages}");

    // Again: already complete.
    let out = run(llmfs(home.path()).args(["prepare", "fineweb", "--input"]).arg(sample()).arg("--out").arg(&out_dir).args(["--shard-size", "25000"]));
    assert!(out.status.success());
    assert!(stderr(&out).contains("is already complete: 5 shards, 118714 tokens, 300 documents"), "{}", stderr(&out));

    // Another shard size: a clear error, nothing changed.
    let out = run(llmfs(home.path()).args(["prepare", "fineweb", "--input"]).arg(sample()).arg("--out").arg(&out_dir).args(["--shard-size", "30000"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("shard size 25000 vs 30000") && stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(shard_hashes(&out_dir), reference_shards());
}

/// The fake hub's data set: two parquet files of the config, and files that must not be read.
fn dataset_repo() -> HashMap<String, PathBuf> {
    HashMap::from([
        ("sample/10BT/000_00000.parquet".to_string(), sample()),
        ("sample/10BT/001_00000.parquet".to_string(), sample()),
        ("sample/100BT/000_00000.parquet".to_string(), sample()),
        ("data/CC-MAIN-2013-20/train-00000-of-00014.parquet".to_string(), sample()),
        ("README.md".to_string(), fixtures().join("data/README.md")),
    ])
}

#[test]
fn prepare_fineweb_downloads_the_config_file_by_file_and_resumes_from_the_cache() {
    let hub = FakeHub::start(HashMap::from([(format!("datasets/{DATASET}"), dataset_repo())]));
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("shards");
    let prepare = |extra: &[&str]| {
        let mut cmd = llmfs(home.path());
        cmd.env("HF_ENDPOINT", &hub.url).args(["prepare", "fineweb", "--dataset", DATASET, "--config", "sample-10BT", "--out"]);
        cmd.arg(&out_dir).args(["--shard-size", "25000", "--json"]).args(extra);
        run(&mut cmd)
    };

    // A small run first: 150 documents of the first file.
    let out = prepare(&["--max-docs", "150"]);
    assert!(out.status.success());
    assert_eq!(last_json(&out)["documents"], 150);
    let log = hub.requests.lock().unwrap().clone();
    assert_eq!(log[0], format!("GET /api/datasets/{DATASET}/revision/main"), "{log:?}");
    let first_file = format!("/datasets/{DATASET}/resolve/{COMMIT}/sample/10BT/000_00000.parquet");
    assert!(log.iter().any(|r| r.ends_with(&first_file)), "downloaded from the listed commit: {log:?}");
    assert!(!log.iter().any(|r| r.contains("001_00000")), "the second file is not needed yet: {log:?}");
    let cached = home.path().join(format!("hub/datasets--llmfs-test--fineweb-edu/snapshots/{COMMIT}/sample/10BT/000_00000.parquet"));
    assert_eq!(std::fs::read(&cached).unwrap(), std::fs::read(sample()).unwrap());

    // Then everything: the first file comes from the cache, the second is downloaded.
    let before = hub.request_count();
    let out = prepare(&[]);
    assert!(out.status.success());
    let json = last_json(&out);
    assert_eq!((json["documents"].as_u64(), json["tokens"].as_u64()), (Some(600), Some(2 * 118_714)));
    assert_eq!(json["reused_shards"], 2);
    let log: Vec<String> = hub.requests.lock().unwrap()[before..].to_vec();
    assert_eq!(log[0], format!("GET /api/datasets/{DATASET}/revision/{COMMIT}"), "the manifest pins the commit: {log:?}");
    assert!(!log.iter().any(|r| r.contains("000_00000")), "the first file is cached: {log:?}");
    assert!(log.iter().any(|r| r.contains("sample/10BT/001_00000.parquet")), "{log:?}");
    assert!(!log.iter().any(|r| r.contains("100BT") || r.contains("CC-MAIN") || r.contains("README")), "{log:?}");

    // The first 118,714 tokens are the single file's: its four full shards are fineweb.py's.
    let hashes = shard_hashes(&out_dir);
    assert_eq!(hashes.len(), 10, "237,428 tokens: 9 full shards and one of 12,428");
    let reference = reference_shards();
    for index in 0..4 {
        let name = if index == 0 { "edufineweb_val_000000.npy".to_string() } else { format!("edufineweb_train_{index:06}.npy") };
        let ours = hashes.iter().find(|(n, _)| *n == name).unwrap();
        assert!(reference.contains(ours), "{name}");
    }
    // And the whole thing is what the same two files give locally.
    let local = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), local.path().join("000_00000.parquet")).unwrap();
    std::fs::copy(sample(), local.path().join("001_00000.parquet")).unwrap();
    let local_out = local.path().join("shards");
    let out = run(llmfs(home.path()).args(["prepare", "fineweb", "--shard-size", "25000", "--data"]).arg(local.path()).arg("--out").arg(&local_out));
    assert!(out.status.success());
    assert_eq!(shard_hashes(&local_out), hashes);
}

#[test]
fn hub_errors_are_clear() {
    let hub = FakeHub::start(HashMap::from([(format!("datasets/{DATASET}"), dataset_repo())]));
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("shards");
    let prepare = |dataset: &str, config: &str, offline: bool| {
        let mut cmd = llmfs(home.path());
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        cmd.env("HF_ENDPOINT", &hub.url).args(["prepare", "fineweb", "--dataset", dataset, "--config", config, "--out"]).arg(&out_dir);
        run(&mut cmd)
    };
    let out = prepare("nobody/nothing", "sample-10BT", false);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nobody/nothing: not found on"), "{}", stderr(&out));

    let out = prepare(DATASET, "sample-1BT", false);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no parquet files under sample/1BT/"), "{}", stderr(&out));

    let out = prepare(DATASET, "sample-10BT", true);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("HF_HUB_OFFLINE") && err.contains("--input") && err.contains("datasets--llmfs-test--fineweb-edu"), "{err}");
}

/// Your own files and a Llama-family model, end to end on the command line: `.txt` documents
/// tokenized with the fixture Llama 3 tokenizer (`--tokenizer DIR`, recorded as an absolute path),
/// a `random:llama-tiny` pretrained from scratch on them (the shards' tokenizer, whose files its
/// saved model gets), and `generate` on that run, which finds them.
#[test]
fn a_llama_model_pretrains_from_scratch_on_your_own_text_files() {
    let home = tempfile::tempdir().unwrap();
    let corpus = home.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let text = std::fs::read_to_string(fixtures().join("data/perplexity_text.txt")).unwrap();
    for (i, part) in text.split("\n\n").filter(|p| !p.trim().is_empty()).enumerate() {
        std::fs::write(corpus.join(format!("{i:03}.txt")), part.repeat(5)).unwrap();
    }
    let shards = home.path().join("shards");
    let llama = fixtures().join("llama-tiny");
    let out = run(llmfs(home.path()).args(["prepare", "fineweb", "--input"]).arg(&corpus).arg("--out").arg(&shards).arg("--tokenizer").arg(&llama).args(["--shard-size", "600"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shards.join("fineweb_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["settings"]["tokenizer"], llama.canonicalize().unwrap().to_string_lossy().as_ref());
    assert_eq!(manifest["settings"]["token_type"], "uint32");

    let run_dir = home.path().join("run");
    let out = run(llmfs(home.path())
        .args(["pretrain", "--config", "llama-tiny", "--data"])
        .arg(&shards)
        .args(["--seq-len", "16", "--batch-size", "2", "--steps", "3", "--warmup-steps", "1", "--eval-every", "3", "--eval-batches", "1"])
        .args(["--sample-every", "100", "--plain", "--device", "cpu", "--threads", "2", "--run-dir"])
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run_dir.join("model/tokenizer.json").is_file(), "the shards' tokenizer saved with the model");
    let out = run(llmfs(home.path()).args(["generate", "--device", "cpu", "--prompt", "The Union", "--max-new-tokens", "3", "--model"]).arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("The Union"), "{}", stdout(&out));

    // GPT-2 on these shards: refused, naming the command that makes its own.
    let out = run(llmfs(home.path()).args(["pretrain", "--config", "tiny", "--data"]).arg(&shards).args(["--seq-len", "16", "--steps", "1", "--plain", "--run-dir"]).arg(home.path().join("gpt2")));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("make shards of its ids with `llmfs prepare fineweb --tokenizer gpt2`"), "{}", stderr(&out));
}

/// The fast path for Llama 3's and Qwen3's tokenizers (`gpt::text::byte_level_bpe`) writes the
/// shards that `tokenizers` writes (`LLMFS_FAST_BPE=0`), byte for byte, for the whole
/// FineWeb-Edu sample.
#[test]
fn llama_shards_are_the_same_with_the_fast_tokenizer_path() {
    let home = tempfile::tempdir().unwrap();
    for model in ["llama-tiny", "qwen3-tiny"] {
        let prepare = |fast: &str| {
            let out_dir = home.path().join(format!("{model}-{fast}"));
            let out = run(llmfs(home.path())
                .env("LLMFS_FAST_BPE", fast)
                .args(["prepare", "fineweb", "--input"])
                .arg(sample())
                .arg("--out")
                .arg(&out_dir)
                .arg("--tokenizer")
                .arg(fixtures().join(model))
                .args(["--shard-size", "50000"]));
            assert!(out.status.success(), "{}", stderr(&out));
            shard_hashes(&out_dir)
        };
        let fast = prepare("1");
        assert!(fast.len() >= 2, "{model}: {fast:?}");
        assert_eq!(fast, prepare("0"), "{model}");
    }
}
