//! `--data SOURCE` of `finetune classify` / `eval classify` beyond one file: parquet, a directory
//! of split files, and `hf:` data sets from the loopback fake hub (listing, config and split
//! choice, the parquet-export fallback, offline use of the cache, a resumed download).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};

use crate::common::*;

const DATASET: &str = "llmfs-test/topics";

/// 15 rows for each of 4 topics: (headline, body, topic), row `i` of every topic together.
fn topic_rows() -> Vec<[String; 3]> {
    let topics = [("weather", "rain and wind today"), ("sports", "the team won the match"), ("food", "bread with cheese and soup"), ("music", "a song on the old guitar")];
    (0..15).flat_map(|i| topics.map(|(topic, words)| [format!("{words}, {i}"), format!("more about {topic}"), topic.to_string()])).collect()
}

fn write_parquet(path: &Path, rows: &[[String; 3]]) {
    let column = |i: usize| -> ArrayRef { Arc::new(StringArray::from(rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>())) };
    let batch = RecordBatch::try_from_iter([("headline", column(0)), ("body", column(1)), ("topic", column(2))]).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_csv(path: &Path, rows: &[[String; 3]]) {
    let mut text = String::from("headline,body,topic\n");
    for [headline, body, topic] in rows {
        text.push_str(&format!("\"{headline}\",{body},{topic}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn finetune(home: &Path, data: &str, run_dir: &Path, extra: &[&str], hub: &FakeHub) -> std::process::Output {
    run(llmfs(home)
        .env("HF_ENDPOINT", &hub.url)
        .args(["finetune", "classify", "--text-column", "headline,body", "--label-column", "topic", "--epochs", "1", "--max-length", "16"])
        .args(["--json", "--plain", "--device", "cpu", "--data", data, "--model"])
        .arg(tiny_model_dir())
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra))
}

fn eval(home: &Path, run_dir: &Path, data: &str, hub: &FakeHub, offline: bool) -> std::process::Output {
    let mut cmd = llmfs(home);
    cmd.env("HF_ENDPOINT", &hub.url).args(["eval", "classify", "--json", "--device", "cpu", "--text-column", "headline,body", "--label-column", "topic"]);
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    }
    run(cmd.arg("--model").arg(run_dir).args(["--data", data]))
}

#[test]
fn classify_reads_parquet_directories_and_hub_datasets() {
    let home = tempfile::tempdir().unwrap();
    let files = home.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let rows = topic_rows();
    // Rows 0..12 of each topic are "train", 12..15 "test".
    let (train_rows, test_rows) = rows.split_at(48);
    let path = |name: &str| files.join(name);
    write_csv(&path("all.csv"), &rows);
    write_parquet(&path("all.parquet"), &rows);
    write_parquet(&path("train.parquet"), train_rows);
    write_parquet(&path("test.parquet"), test_rows);
    let scripted = HashMap::from([("topics.py".to_string(), fixtures().join("data/README.md"))]);
    let export = HashMap::from([
        ("default/train/0000.parquet".to_string(), path("train.parquet")),
        ("default/test/0000.parquet".to_string(), path("test.parquet")),
    ]);
    let hub = FakeHub::start(HashMap::from([
        (
            format!("datasets/{DATASET}"),
            HashMap::from([
                ("README.md".to_string(), fixtures().join("data/README.md")),
                ("data/train-00000-of-00001.parquet".to_string(), path("train.parquet")),
                ("data/test-00000-of-00001.parquet".to_string(), path("test.parquet")),
            ]),
        ),
        ("datasets/llmfs-test/scripted".to_string(), scripted),
        (format!("datasets/llmfs-test/scripted@{PARQUET_EXPORT}"), export),
    ]));

    // A parquet file splits exactly as the same rows in CSV: the same test texts, the same scores.
    let csv_run = home.path().join("csv");
    let out = finetune(home.path(), path("all.csv").to_str().unwrap(), &csv_run, &[], &hub);
    assert!(out.status.success(), "{}", stderr(&out));
    let parquet_run = home.path().join("parquet");
    let out = finetune(home.path(), path("all.parquet").to_str().unwrap(), &parquet_run, &[], &hub);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("40 train / 4 validation / 16 test texts"), "{}", stderr(&out));
    assert_eq!(read_json(&parquet_run.join("eval/metrics.json"))["test"], read_json(&csv_run.join("eval/metrics.json"))["test"]);

    // A directory with train.* and test.*: test as it is, validation cut from train in the
    // proportion 0.1 : 0.7 (12 per class: ⌊0.875·12⌋ = 10 train, 2 validation).
    let dir = home.path().join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(path("train.parquet"), dir.join("train.parquet")).unwrap();
    write_csv(&dir.join("test.csv"), test_rows);
    let out = finetune(home.path(), dir.to_str().unwrap(), &home.path().join("dir-run"), &[], &hub);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("40 train / 8 validation / 12 test texts"), "{}", stderr(&out));

    // hf:owner/name: the repo's own data files (data/{split}-*.parquet), listed at main and
    // downloaded from the commit listed; its test split is the test set.
    let hub_run = home.path().join("hub-run");
    let out = finetune(home.path(), &format!("hf:{DATASET}"), &hub_run, &[], &hub);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("40 train / 8 validation / 12 test texts"), "{}", stderr(&out));
    let log = hub.requests.lock().unwrap().clone();
    assert!(log.contains(&format!("GET /api/datasets/{DATASET}/revision/main")), "{log:?}");
    assert!(log.iter().any(|r| r.ends_with(&format!("/datasets/{DATASET}/resolve/{COMMIT}/data/train-00000-of-00001.parquet"))), "{log:?}");
    assert!(!log.iter().any(|r| r.contains("README")), "only the data files: {log:?}");
    let data = &read_json(&hub_run.join("run.json"))["config"]["data"];
    assert_eq!((data["data"]["commit"].as_str(), data["test"]["split"].as_str()), (Some(COMMIT), Some("test")), "{data}");
    let metrics = read_json(&hub_run.join("eval/metrics.json"));

    // @split picks the split; offline, the cache serves it without a request.
    let before = hub.request_count();
    let out = eval(home.path(), &hub_run, &format!("hf:{DATASET}@test"), &hub, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let scores = last_json(&out);
    assert_eq!(scores["n"], 12);
    assert_eq!(scores["accuracy"], metrics["test"]["accuracy"], "the same 12 texts as the run's test split");
    assert_eq!(hub.request_count(), before, "offline: no request");

    // A data set without data files of its own (a loading script) is read from the hub's
    // parquet export (refs/convert/parquet, {config}/{split}/0000.parquet).
    let out = eval(home.path(), &hub_run, "hf:llmfs-test/scripted", &hub, false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["n"], 12, "the test split by default");
    assert!(hub.requests.lock().unwrap().iter().any(|r| r.contains("/api/datasets/llmfs-test/scripted/revision/refs%2Fconvert%2Fparquet")));

    // A download cut in the middle resumes from its partial file (a Range request from there).
    let fresh = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(path("test.parquet")).unwrap();
    let blobs = fresh.path().join("hub/datasets--llmfs-test--topics/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{}.part", etag(&bytes))), &bytes[..bytes.len() / 2]).unwrap();
    let out = eval(fresh.path(), &hub_run, &format!("hf:{DATASET}@test"), &hub, false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["n"], 12);
    let ranges = hub.ranges.lock().unwrap().clone();
    assert!(ranges.iter().any(|r| r.contains("test-00000-of-00001.parquet") && r.ends_with(&format!("bytes={}-", bytes.len() / 2))), "{ranges:?}");

    // Clear errors: an unknown split or config, and offline with nothing cached.
    let out = eval(home.path(), &hub_run, &format!("hf:{DATASET}@dev"), &hub, false);
    assert!(!out.status.success() && stderr(&out).contains("no split `dev` (it has test, train)"), "{}", stderr(&out));
    let out = eval(home.path(), &hub_run, &format!("hf:{DATASET}:other"), &hub, false);
    assert!(!out.status.success() && stderr(&out).contains("no config `other`"), "{}", stderr(&out));
    let empty = tempfile::tempdir().unwrap();
    let out = eval(empty.path(), &hub_run, &format!("hf:{DATASET}"), &hub, true);
    assert!(!out.status.success() && stderr(&out).contains("HF_HUB_OFFLINE is set") && stderr(&out).contains("not in the Hugging Face cache"), "{}", stderr(&out));
    let out = eval(home.path(), &hub_run, "hf:nothing-here", &hub, false);
    assert!(!out.status.success() && stderr(&out).contains("expected hf:owner/name"), "{}", stderr(&out));
}

/// `finetune instruct --data hf:owner/name`: Alpaca records from a hub data set's parquet file
/// (tatsu-lab/alpaca's layout: `data/train-*.parquet` with instruction, input, output, text)
/// split as the same records from the book's JSON file.
#[test]
fn finetune_instruct_reads_an_hf_dataset() {
    let home = tempfile::tempdir().unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(fixtures().join("data/instruction_data_60.json")).unwrap()).unwrap();
    let column = |key: &str| -> ArrayRef {
        Arc::new(StringArray::from(records.iter().map(|r| r[key].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()))
    };
    let text = column("output");
    let batch = RecordBatch::try_from_iter([("instruction", column("instruction")), ("input", column("input")), ("output", column("output")), ("text", text)]).unwrap();
    let parquet_file = home.path().join("alpaca.parquet");
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&parquet_file).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let hub = FakeHub::start(HashMap::from([(
        "datasets/llmfs-test/alpaca".to_string(),
        HashMap::from([("data/train-00000-of-00001-a09b74b3ef9c3b56.parquet".to_string(), parquet_file)]),
    )]));
    let run_dir = home.path().join("run");
    let out = run(llmfs(home.path())
        .env("HF_ENDPOINT", &hub.url)
        .args(["finetune", "instruct", "--epochs", "1", "--batch-size", "8", "--plain", "--device", "cpu", "--data", "hf:llmfs-test/alpaca", "--model"])
        .arg(tiny_model_dir())
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("51 train / 3 validation / 6 test records from hf:llmfs-test/alpaca (train)"), "{}", stderr(&out));
    let train = read_json(&run_dir.join("data/train.json"));
    let expected: Vec<serde_json::Value> =
        records[..51].iter().map(|r| serde_json::json!({ "instruction": r["instruction"], "input": r["input"], "output": r["output"] })).collect();
    assert_eq!(train, serde_json::Value::Array(expected), "the book's first 85 %, in file order");
}
