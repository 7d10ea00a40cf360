//! The tokenizer's hot path (criterion), against tiktoken-rs's encoder in the same process: GPT-2's
//! split pattern through fancy_regex plus the same BPE merge. The text is the shipped HellaSwag and
//! Alpaca samples (37 kB of English); both must give the same tokens.
//!
//!     cargo bench --bench tokenizer
//!
//! `scripts/bench-fineweb.sh` measures the whole shard preparation against build-nanogpt's Python.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmfs::gpt::{Tokenizer, text::pretokenize};

fn corpus() -> String {
    ["tests/fixtures/data/hellaswag_val_40.jsonl", "tests/fixtures/data/instruction_data_60.json"]
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (run from the repository root)")))
        .collect()
}

fn tokenizer(c: &mut Criterion) {
    let text = corpus();
    let ours = Tokenizer::gpt2();
    let tiktoken = tiktoken_rs::r50k_base_singleton();
    assert_eq!(ours.encode_ordinary(&text), tiktoken.encode_ordinary(&text), "the two encoders disagree");

    let mut group = c.benchmark_group("encode_ordinary");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("llmfs", |b| b.iter(|| ours.encode_ordinary(&text)));
    group.bench_function("tiktoken-rs", |b| b.iter(|| tiktoken.encode_ordinary(&text)));
    group.bench_function("llmfs pretokenize only", |b| b.iter(|| pretokenize::pieces(&text).count()));
    group.finish();
}

criterion_group!(benches, tokenizer);
criterion_main!(benches);
