//! `llmfs eval perplexity` end to end with the real binary: the tiny GPT-2 and Llama fixtures on
//! `tests/fixtures/data/perplexity_text.txt` (and the same documents as JSONL records, as a GPT-2
//! token shard, and as a Llama token shard from `prepare fineweb --tokenizer`), compared with `tests/fixtures/perplexity_reference.json` (transformers'
//! strided computation; scripts/reference/perplexity_reference.py) to 1e-4 relative.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// The reference case of `model` with these window settings.
fn reference_case(model: &str, seq_len: u64, stride: u64) -> Value {
    let text = std::fs::read_to_string(fixtures().join("perplexity_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let found = cases.iter().find(|c| c["model"] == model && c["seq_len"] == seq_len && c["stride"] == stride);
    found.unwrap_or_else(|| panic!("no reference case for {model}, seq_len {seq_len}, stride {stride}")).clone()
}

fn perplexity(home: &Path, model: &str, data: &Path, flags: &[&str]) -> std::process::Output {
    let mut cmd = llmfs(home);
    cmd.args(["eval", "perplexity", "--json", "--device", "cpu", "--threads", "2", "--model"])
        .arg(fixtures().join(model))
        .arg("--data")
        .arg(data)
        .args(flags);
    run(&mut cmd)
}

/// The `--json` line equals the reference case: the scored tokens exactly, the rest to 1e-4 relative.
fn assert_matches(out: &std::process::Output, expected: &Value) {
    assert!(out.status.success(), "llmfs failed: {}", stderr(out));
    let got = last_json(out);
    assert_eq!(got["tokens"], expected["tokens"], "scored tokens: {got}");
    for key in ["nll", "perplexity", "bits_per_byte"] {
        let (g, e) = (got[key].as_f64().unwrap(), expected[key].as_f64().unwrap());
        assert!(((g - e) / e).abs() <= 1e-4, "{key}: {g} vs transformers' {e}");
    }
}

#[test]
fn a_text_file_matches_transformers_with_and_without_overlap() {
    let home = tempfile::tempdir().unwrap();
    let text = fixtures().join("data/perplexity_text.txt");
    // Defaults: windows of the model's context (128), not overlapping.
    let out = perplexity(home.path(), "gpt2-tiny", &text, &[]);
    assert_matches(&out, &reference_case("gpt2-tiny", 128, 128));
    assert!(stderr(&out).contains("perplexity "), "a summary on stderr");
    let out = perplexity(home.path(), "gpt2-tiny", &text, &["--seq-len", "40", "--stride", "16", "--batch-size", "3"]);
    assert_matches(&out, &reference_case("gpt2-tiny", 40, 16));
}

#[test]
fn jsonl_records_are_joined_with_blank_lines_and_tokenized_with_the_models_tokenizer() {
    let home = tempfile::tempdir().unwrap();
    let docs = fixtures().join("data/perplexity_docs.jsonl");
    let out = perplexity(home.path(), "llama-tiny", &docs, &["--text-column", "text", "--seq-len", "64", "--stride", "24"]);
    assert_matches(&out, &reference_case("llama-tiny", 64, 24));
    let out = perplexity(home.path(), "llama-tiny", &docs, &[]);
    assert_matches(&out, &reference_case("llama-tiny", 256, 256));

    // A column that is not there is an error naming the file and the record.
    let out = perplexity(home.path(), "llama-tiny", &docs, &["--text-column", "body"]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("perplexity_docs.jsonl: line 1") && message.contains("body"), "{message}");
}

#[test]
fn gpt2_token_shards_are_scored_as_the_text_they_decode_to() {
    let home = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("data/perplexity_text.txt")).unwrap();
    let shards = home.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let tokens: Vec<u16> = gpt::Tokenizer::gpt2().encode(&text).into_iter().map(|id| id as u16).collect();
    pipelines::data::shards::write_tokens(&shards.join("docs_val_000000.npy"), &tokens, pipelines::data::shards::TokenType::Uint16).unwrap();
    // A train shard beside it is not evaluated: the val shards are.
    pipelines::data::shards::write_tokens(&shards.join("docs_train_000001.npy"), &tokens[..10], pipelines::data::shards::TokenType::Uint16).unwrap();
    let out = perplexity(home.path(), "gpt2-tiny", &shards, &["--seq-len", "40", "--stride", "16"]);
    assert_matches(&out, &reference_case("gpt2-tiny", 40, 16));

    // The same text as the one document of a shard of the Llama tokenizer's ids (`prepare fineweb
    // --tokenizer`: <|begin_of_text|> and its ids, which is what the tokenizer makes of the text):
    // transformers' numbers for the text.
    let corpus = home.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("text.txt"), &text).unwrap();
    let llama_shards = home.path().join("llama-shards");
    let out = run(llmfs(home.path()).args(["prepare", "fineweb", "--input"]).arg(&corpus).arg("--out").arg(&llama_shards).arg("--tokenizer").arg(fixtures().join("llama-tiny")));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = perplexity(home.path(), "llama-tiny", &llama_shards, &["--seq-len", "64", "--stride", "24"]);
    assert_matches(&out, &reference_case("llama-tiny", 64, 24));

    // Shards hold GPT-2 ids: a model with another tokenizer is refused.
    let out = perplexity(home.path(), "llama-tiny", &shards, &[]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("the token shards hold ids of gpt2's tokenizer") && message.contains("llama-tiny has another"), "{message}");
}
