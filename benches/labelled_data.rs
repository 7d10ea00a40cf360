//! Reading and preparing a 100,000-row labelled CSV for `finetune classify` (criterion), against
//! the floor of the `csv` crate reading the same rows into strings in the same process: records
//! read (`data::records`), labelled texts and class indices, a stratified split, and every text
//! tokenised and padded as the training loop batches them (GPT-2 BPE and a Llama-family
//! tokenizer.json). Rows are HellaSwag contexts (~230 characters) with 4 labels.
//!
//!     cargo bench --bench labelled_data

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmfs::gpt::Tokenizer;
use llmfs::pipelines::data::labelled::{self, Columns, SplitPlan};
use llmfs::pipelines::data::source::DataSource;
use llmfs::pipelines::data::spam::SpamDataset;

const ROWS: usize = 100_000;

fn write_csv() -> PathBuf {
    let sample = std::fs::read_to_string("tests/fixtures/data/hellaswag_val_40.jsonl").expect("run from the repository root");
    let contexts: Vec<String> = sample.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ctx"].as_str().unwrap().to_string()).collect();
    let mut writer = csv::Writer::from_path(std::env::temp_dir().join("llmfs-bench-labelled.csv")).unwrap();
    writer.write_record(["id", "text", "label"]).unwrap();
    for i in 0..ROWS {
        writer.write_record([i.to_string(), format!("{} ({i})", contexts[i % contexts.len()]), ["a", "b", "c", "d"][i % 4].to_string()]).unwrap();
    }
    writer.flush().unwrap();
    std::env::temp_dir().join("llmfs-bench-labelled.csv")
}

fn prepare(path: &Path, tokenizer: &Tokenizer) -> usize {
    let hub = llmfs::gpt::io::HubOptions::from_env();
    let data = DataSource::open(path.to_str().unwrap(), &hub).unwrap();
    let plan = SplitPlan { train: 0.7, validation: 0.1, balance: false, seed: 123 };
    let splits = labelled::labelled_splits(&data, &Columns::default(), None, None, None, plan).unwrap().splits;
    let train = SpamDataset::for_training(&splits.train, Some(128), 1024, tokenizer).unwrap();
    let validation = SpamDataset::with_length(&splits.validation, train.length, tokenizer).unwrap();
    let test = SpamDataset::with_length(&splits.test, train.length, tokenizer).unwrap();
    train.len() + validation.len() + test.len()
}

fn labelled_data(c: &mut Criterion) {
    let path = write_csv();
    let llama = Tokenizer::from_model_dir(Path::new("tests/fixtures/llama-tiny")).unwrap();
    assert_eq!(prepare(&path, &Tokenizer::gpt2()), ROWS);
    let mut group = c.benchmark_group("labelled_csv_100k");
    group.sample_size(10).throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("csv crate, rows to strings (floor)", |b| {
        b.iter(|| csv::Reader::from_path(&path).unwrap().records().map(|r| r.unwrap().iter().map(str::to_string).count()).sum::<usize>())
    });
    group.bench_function("read labelled texts", |b| b.iter(|| labelled::read_labelled(&path, &Columns::default()).unwrap().len()));
    group.bench_function("read + split + tokenise + pad (GPT-2)", |b| b.iter(|| prepare(&path, &Tokenizer::gpt2())));
    group.bench_function("read + split + tokenise + pad (Llama tokenizer.json)", |b| b.iter(|| prepare(&path, &llama)));
    group.finish();
}

criterion_group!(benches, labelled_data);
criterion_main!(benches);
