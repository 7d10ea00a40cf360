//! `llmfs prepare spam` end to end: the real binary downloads the fixture zip from a loopback
//! server (no network) and writes the splits.

use std::collections::HashMap;

use crate::common::*;
use pipelines::data::spam::read_split_csv;

const REPO: &str = "datasets/uci";
const ZIP: &str = "sms_spam_collection.zip";

/// The fixture zip served at `{url}/datasets/uci/resolve/main/sms_spam_collection.zip`.
fn serve_zip() -> (FakeHub, String) {
    let files = HashMap::from([(ZIP.to_string(), fixtures().join("data").join(ZIP))]);
    let hub = FakeHub::start(HashMap::from([(REPO.to_string(), files)]));
    let url = format!("{}/{REPO}/resolve/main/{ZIP}", hub.url);
    (hub, url)
}

#[test]
fn prepare_spam_downloads_balances_splits_and_reports_json() {
    let (hub, url) = serve_zip();
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("spam");
    let out = run(llmfs(home.path())
        .args(["prepare", "spam", "--url", &url, "--out"])
        .arg(&out_dir)
        .args(["--seed", "123", "--json"]));
    assert!(out.status.success());

    let json = last_json(&out);
    for (key, value) in [
        ("lines", 300),
        ("skipped", 0),
        ("ham", 220),
        ("spam", 80),
        ("balanced", 160),
        ("train", 112),
        ("validation", 16),
        ("test", 32),
    ] {
        assert_eq!(json[key], value, "{key} in {json}");
    }
    assert_eq!(json["skipped_lines"], serde_json::json!([]));
    assert_eq!(json["reused_download"], false);
    assert_eq!(stdout(&out).lines().count(), 1, "one JSON object on stdout");
    let messages = stderr(&out);
    assert!(messages.contains("220 ham, 80 spam") && messages.contains("train.csv (112)"), "{messages}");

    let mut spam = 0;
    for (name, rows) in [("train.csv", 112), ("validation.csv", 16), ("test.csv", 32)] {
        let text = std::fs::read_to_string(out_dir.join(name)).unwrap();
        assert!(text.starts_with("Label,Text\n"), "{name}");
        let messages = read_split_csv(&out_dir.join(name)).unwrap();
        assert_eq!(messages.len(), rows, "{name}");
        spam += messages.iter().filter(|m| m.label == 1).count();
    }
    assert_eq!(spam, 80, "half of the 160 messages are spam");
    assert_eq!(hub.request_count(), 1);

    // Again, without --json: the download is reused, nothing on stdout, the same files.
    let before = std::fs::read(out_dir.join("train.csv")).unwrap();
    let out = run(llmfs(home.path()).args(["prepare", "spam", "--url", &url, "--out"]).arg(&out_dir));
    assert!(out.status.success());
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("already downloaded"));
    assert_eq!(std::fs::read(out_dir.join("train.csv")).unwrap(), before, "seed 123 is the default");
    assert_eq!(hub.request_count(), 1);
}

#[test]
fn prepare_spam_fails_clearly_on_a_missing_url() {
    let (hub, _) = serve_zip();
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("spam");
    let url = format!("{}/{REPO}/resolve/main/nothing.zip", hub.url);
    let out = run(llmfs(home.path()).args(["prepare", "spam", "--url", &url, "--out"]).arg(&out_dir).arg("--json"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains(&url) && message.contains("404"), "{message}");
    assert!(stdout(&out).is_empty());
    assert!(!out_dir.join("train.csv").exists());
}

#[test]
fn prepare_has_help_for_every_data_set() {
    let home = tempfile::tempdir().unwrap();
    let out = run(llmfs(home.path()).args(["prepare", "--help"]));
    assert!(out.status.success());
    assert!(stdout(&out).contains("spam"));
    let out = run(llmfs(home.path()).args(["prepare", "spam", "--help"]));
    assert!(out.status.success());
    for flag in ["--url", "--out", "--seed", "--json"] {
        assert!(stdout(&out).contains(flag), "{flag}");
    }
}
