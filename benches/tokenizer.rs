//! The tokenizer's hot path (criterion), against tiktoken-rs's encoder in the same process: GPT-2's
//! split pattern through fancy_regex plus the same BPE merge. The text is the shipped HellaSwag and
//! Alpaca samples (37 kB of English); both must give the same tokens. Then Llama 3's
//! `tokenizer.json` (the fixture's): our fast path (`gpt::text::byte_level_bpe`) against Hugging
//! Face's `tokenizers` crate, which it replaces for `encode_ordinary`.
//!
//!     cargo bench --bench tokenizer
//!
//! `scripts/bench-fineweb.sh` measures the whole shard preparation against build-nanogpt's Python.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llmfs::gpt::text::{byte_level_bpe::ByteLevelBpe, pretokenize};
use llmfs::gpt::Tokenizer;

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

    let llama = "tests/fixtures/llama-tiny/tokenizer.json";
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(llama).unwrap_or_else(|e| panic!("{llama}: {e}"))).expect("a JSON file");
    let fast = ByteLevelBpe::from_json(&json).expect("Llama 3's tokenizer.json takes the fast path");
    let hf = tokenizers::Tokenizer::from_file(llama).expect("tokenizers reads it");
    let fast_ids = |text: &str| {
        let mut ids = Vec::new();
        assert!(fast.encode_ordinary_into(text, &mut ids), "no added token's text in the corpus");
        ids
    };
    assert_eq!(fast_ids(&text), hf.encode_fast(text.as_str(), false).expect("encodes").get_ids(), "the two encoders disagree");
    let mut group = c.benchmark_group("llama3 encode_ordinary");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("llmfs fast path", |b| b.iter(|| fast_ids(&text)));
    group.bench_function("tokenizers", |b| b.iter(|| hf.encode_fast(text.as_str(), false)));
    group.bench_function("llmfs pretokenize only", |b| b.iter(|| pretokenize::llama3_pieces(&text, 3).count()));
    group.finish();
}

criterion_group!(benches, tokenizer);
criterion_main!(benches);
