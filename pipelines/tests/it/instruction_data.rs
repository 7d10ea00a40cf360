//! Instruction data: loading and validating Alpaca JSON, the book's split, the prompt format,
//! the collate function against hand-computed batches, and length-grouped batching.
//! The fixture holds 60 records, 20 of them with an input.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::common_http::{Reply, Server, fixtures};
use gpt::burn::prelude::*;
use gpt::{EOT_TOKEN, Tokenizer};
use pipelines::data::instruction::{
    CollateConfig, Example, InstructionDataset, InstructionRecord, cache_path, collate, format_input, full_text, length_grouped_batches,
    parse_records, read_records, read_splits, split_records, write_splits,
};
use pipelines::data::conversation::{InstructionData, load_instruction_data};
use pipelines::train::epoch_order;

const E: i64 = EOT_TOKEN as i64;
const X: i64 = -100;

fn fixture_path() -> PathBuf {
    fixtures().join("data/instruction_data_60.json")
}

fn fixture_records() -> Vec<InstructionRecord> {
    read_records(&fixture_path()).unwrap()
}

fn record(instruction: &str, input: &str, output: &str) -> InstructionRecord {
    InstructionRecord { instruction: instruction.into(), input: input.into(), output: output.into() }
}

#[test]
fn the_fixture_loads_with_its_counts_and_fields() {
    let records = fixture_records();
    assert_eq!(records.len(), 60);
    assert_eq!(records.iter().filter(|r| r.input.is_empty()).count(), 40);
    assert_eq!(
        records[0],
        record(
            "Rewrite the following sentence in the past tense.",
            "The children play in the garden after school.",
            "The children played in the garden after school."
        )
    );
    assert_eq!(records[1], record("Give a synonym for 'quiet'.", "", "A synonym for 'quiet' is 'silent'."));
    // `\u00b0` escapes come back as the characters.
    assert!(records.iter().any(|r| r.output.contains('°') || r.instruction.contains('°') || r.input.contains('°')));
}

#[test]
fn splits_follow_the_books_int_arithmetic_in_file_order() {
    let records = fixture_records();
    // int(60 * 0.85) = 51, int(60 * 0.1) = 6, the rest 3.
    let splits = split_records(records.clone(), false, 0);
    assert_eq!([splits.train.len(), splits.test.len(), splits.validation.len()], [51, 6, 3]);
    assert_eq!(splits.train, records[..51]);
    assert_eq!(splits.test, records[51..57]);
    assert_eq!(splits.validation, records[57..]);

    // 1,100 records (the book's file) give 935 / 110 / 55; other sizes as Python's int(n * x).
    for (n, want) in [(1100, [935, 110, 55]), (7, [5, 0, 2]), (13, [11, 1, 1]), (33, [28, 3, 2]), (0, [0, 0, 0])] {
        let many: Vec<InstructionRecord> = (0..n).map(|i| record(&i.to_string(), "", "o")).collect();
        let s = split_records(many, false, 0);
        assert_eq!([s.train.len(), s.test.len(), s.validation.len()], want, "n = {n}");
    }

    // A seeded shuffle: the same seed gives the same split, another seed another one; nothing lost.
    let a = split_records(records.clone(), true, 123);
    let b = split_records(records.clone(), true, 123);
    let c = split_records(records.clone(), true, 124);
    assert_eq!(a, b);
    assert_ne!(a.train, c.train);
    assert_ne!(a.train, splits.train);
    assert_eq!([a.train.len(), a.test.len(), a.validation.len()], [51, 6, 3]);
    let mut all: Vec<String> = a.train.iter().chain(&a.test).chain(&a.validation).map(|r| format!("{r:?}")).collect();
    let mut original: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
    all.sort();
    original.sort();
    assert_eq!(all, original);
}

#[test]
fn split_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let splits = split_records(fixture_records(), false, 0);
    write_splits(dir.path(), &splits).unwrap();
    assert_eq!(read_splits(dir.path()).unwrap(), splits);
    let text = std::fs::read_to_string(dir.path().join("test.json")).unwrap();
    assert!(text.starts_with("[\n    {\n        \"instruction\": "), "{text:.60}");
}

#[test]
fn prompts_are_formatted_exactly_as_the_book() {
    let records = fixture_records();
    assert_eq!(
        format_input(&records[0]),
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\
         \n\n### Instruction:\nRewrite the following sentence in the past tense.\
         \n\n### Input:\nThe children play in the garden after school."
    );
    assert_eq!(
        format_input(&records[1]),
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\
         \n\n### Instruction:\nGive a synonym for 'quiet'."
    );
    assert_eq!(
        full_text(&records[1]),
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\
         \n\n### Instruction:\nGive a synonym for 'quiet'.\n\n### Response:\nA synonym for 'quiet' is 'silent'."
    );
}

#[test]
fn a_missing_input_is_empty_and_bad_records_name_their_index() {
    let file = Path::new("data.json");
    let records = parse_records(r#"[{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "", "output": "d", "extra": 1}]"#, file).unwrap();
    assert_eq!(records, [record("a", "", "b"), record("c", "", "d")]);

    let error = |text: &str| format!("{:#}", parse_records(text, file).unwrap_err());
    let ok = r#"{"instruction": "i", "input": "", "output": "o"}"#;
    let missing_output = format!(r#"[{ok}, {ok}, {ok}, {{"instruction": "i", "input": "x"}}]"#);
    assert_eq!(error(&missing_output), "data.json: record 3 has no \"output\"");
    let missing_instruction = format!(r#"[{ok}, {{"input": "x", "output": "o"}}]"#);
    assert_eq!(error(&missing_instruction), "data.json: record 1 has no \"instruction\"");
    let number_input = format!(r#"[{ok}, {{"instruction": "i", "input": 5, "output": "o"}}]"#);
    assert_eq!(error(&number_input), "data.json: record 1: \"input\" is a number, expected a string");
    let null_output = r#"[{"instruction": "i", "output": null}]"#;
    assert_eq!(error(null_output), "data.json: record 0: \"output\" is null, expected a string");
    assert_eq!(error(&format!("[{ok}, [1, 2]]")), "data.json: record 1 is a list, expected an object");
    assert_eq!(error(ok), "data.json: expected a JSON list of records, found an object");
    let bad_json = error("[\n  {\"instruction\": \"i\",,}\n]");
    assert!(bad_json.starts_with("data.json is not valid JSON: "), "{bad_json}");
    assert!(bad_json.contains("line 2"), "{bad_json}");

    // From a file, the message names the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, &number_input).unwrap();
    let message = format!("{:#}", read_records(&path).unwrap_err());
    assert!(message.starts_with(&format!("{}: record 1", path.display())), "{message}");
}

#[test]
fn a_url_is_downloaded_once_into_the_cache() {
    let bytes = std::fs::read(fixture_path()).unwrap();
    let server = Server::start(vec![("/ch07/instruction-data.json", vec![Reply::Ok(bytes.clone())]), ("/page.html", vec![Reply::Ok(b"<html>".to_vec())])]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/ch07/instruction-data.json");

    // Alpaca records, and the file they were read from.
    struct Loaded {
        path: PathBuf,
        records: Vec<InstructionRecord>,
    }
    let load = |source: &str| match load_instruction_data(source, cache.path()).unwrap() {
        (path, InstructionData::Alpaca(records)) => Loaded { path, records },
        (path, _) => panic!("{} read as conversations", path.display()),
    };
    let first = load(&url);
    assert_eq!(first.path, cache_path(&url, cache.path()));
    assert!(first.path.file_name().unwrap().to_string_lossy().starts_with("instruction-data-"));
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes, "kept byte for byte");
    assert_eq!(first.records, fixture_records());
    let second = load(&url);
    assert_eq!(second.records.len(), 60);
    assert_eq!(server.request_count(), 1, "the second load reads the cache");

    // Another URL with the same file name gets its own cache entry.
    assert_ne!(cache_path("http://a/x/data.json", cache.path()), cache_path("http://b/x/data.json", cache.path()));

    // A download that is not a data set is an error, and is not kept.
    let html = server.url("/page.html");
    let message = format!("{:#}", load_instruction_data(&html, cache.path()).unwrap_err());
    assert!(message.contains("did not give an instruction data set") && message.contains("is not valid JSON"), "{message}");
    assert!(!cache_path(&html, cache.path()).exists());

    // A local path is read where it is.
    let local = load(fixture_path().to_str().unwrap());
    assert_eq!(local.path, fixture_path());
}

/// The book's worked example of `custom_collate_fn` (section 7.3), verbatim.
#[test]
fn collate_matches_the_books_example() {
    let (a, b, c) = ([0u32, 1, 2, 3, 4], [5u32, 6], [7u32, 8, 9]);
    let examples = [Example::alpaca(&a, 1), Example::alpaca(&b, 1), Example::alpaca(&c, 1)];
    let batch = collate(&examples, &CollateConfig::default(), gpt::EOT_TOKEN);
    assert_eq!((batch.batch, batch.len), (3, 5));
    #[rustfmt::skip]
    assert_eq!(batch.inputs, [
        0, 1, 2, 3, 4,
        5, 6, E, E, E,
        7, 8, 9, E, E,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.targets, [
        1, 2, 3, 4, E,
        6, E, X, X, X,
        8, 9, E, X, X,
    ]);
    assert_eq!(batch.counted_targets(), 5 + 2 + 3);
}

#[test]
fn collate_masks_the_prompt_and_truncates() {
    let (a, b, c) = ([0u32, 1, 2, 3, 4], [5u32, 6], [7u32, 8, 9]);
    // Prompts of 3, 2 and 1 tokens: the first 2, 1 and 0 targets predict prompt tokens.
    let examples = [Example::alpaca(&a, 3), Example::alpaca(&b, 2), Example::alpaca(&c, 1)];
    let masked = CollateConfig { mask_prompt: true, ..CollateConfig::default() };
    let batch = collate(&examples, &masked, gpt::EOT_TOKEN);
    #[rustfmt::skip]
    assert_eq!(batch.targets, [
        X, X, 3, 4, E,
        X, E, X, X, X,
        8, 9, E, X, X,
    ]);
    assert_eq!(batch.inputs, collate(&examples, &CollateConfig::default(), gpt::EOT_TOKEN).inputs, "inputs are not masked");

    // Cut to 3 positions (after padding and masking, as the book does).
    let cut = collate(&examples, &CollateConfig { mask_prompt: true, allowed_max_length: Some(3) }, gpt::EOT_TOKEN);
    assert_eq!((cut.batch, cut.len), (3, 3));
    #[rustfmt::skip]
    assert_eq!(cut.inputs, [
        0, 1, 2,
        5, 6, E,
        7, 8, 9,
    ]);
    #[rustfmt::skip]
    assert_eq!(cut.targets, [
        X, X, 3,
        X, E, X,
        8, 9, E,
    ]);
    // A limit above the batch length changes nothing; none cuts nothing.
    let none = CollateConfig { allowed_max_length: None, ..CollateConfig::default() };
    let long = CollateConfig { allowed_max_length: Some(100), ..CollateConfig::default() };
    assert_eq!(collate(&examples, &none, gpt::EOT_TOKEN), collate(&examples, &long, gpt::EOT_TOKEN));
}

#[test]
fn the_dataset_tokenises_the_full_text_and_the_prompt_length() {
    let records = fixture_records();
    let data = InstructionDataset::new(&records[..4], &gpt::Tokenizer::gpt2()).unwrap();
    let tokenizer = Tokenizer::gpt2();
    for (i, r) in records[..4].iter().enumerate() {
        assert_eq!(data.token_ids[i], tokenizer.encode_ordinary(&full_text(r)));
        assert_eq!(data.prompt_lens[i], tokenizer.encode_ordinary(&format_input(r)).len());
        // The prompt's tokens are a prefix of the full text's.
        assert_eq!(data.token_ids[i][..data.prompt_lens[i]], tokenizer.encode_ordinary(&format_input(r))[..]);
    }
    let batch = data.collate(&[2, 0], &CollateConfig { mask_prompt: true, ..CollateConfig::default() });
    let longest = data.token_ids[2].len().max(data.token_ids[0].len());
    assert_eq!((batch.batch, batch.len), (2, longest));
    let row = |r: usize| &batch.targets[r * batch.len..(r + 1) * batch.len];
    for (r, i) in [(0, 2), (1, 0)] {
        let (n, p) = (data.token_ids[i].len(), data.prompt_lens[i]);
        let mut want: Vec<i64> = vec![X; batch.len];
        for t in p - 1..n - 1 {
            want[t] = data.token_ids[i][t + 1] as i64;
        }
        want[n - 1] = E;
        assert_eq!(row(r), &want[..], "row {r}");
    }

    // As tensors.
    let lm = batch.to_lm_batch(&Device::flex());
    assert_eq!(lm.inputs.dims(), [2, longest]);
    assert_eq!(lm.targets.into_data().try_into_vec_as::<i64>().unwrap(), batch.targets);
}

#[test]
fn length_grouped_batches_cover_every_index_once_and_are_seeded() {
    let data = InstructionDataset::new(&fixture_records(), &gpt::Tokenizer::gpt2()).unwrap();
    let lengths = data.lengths();
    let n = lengths.len();
    for (batch_size, drop_last) in [(4, false), (8, false), (7, true), (8, true)] {
        let batches = length_grouped_batches(&lengths, 123, 1, batch_size, drop_last);
        let seen: Vec<usize> = batches.iter().flatten().copied().collect();
        let unique: BTreeSet<usize> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no index twice (batch size {batch_size})");
        if drop_last {
            assert_eq!(batches.len(), n / batch_size);
            assert!(batches.iter().all(|b| b.len() == batch_size));
        } else {
            assert_eq!(unique, (0..n).collect::<BTreeSet<_>>());
            assert_eq!(batches.len(), n.div_ceil(batch_size));
        }
        // 60 examples fit one mega-batch: the batches hold disjoint length ranges.
        let ranges: Vec<(usize, usize)> =
            batches.iter().map(|b| (b.iter().map(|&i| lengths[i]).min().unwrap(), b.iter().map(|&i| lengths[i]).max().unwrap())).collect();
        let mut sorted = ranges.clone();
        sorted.sort();
        assert!(sorted.windows(2).all(|w| w[0].1 <= w[1].0), "{sorted:?}");
        // The longest example is in the first batch.
        assert!(batches[0].iter().any(|&i| lengths[i] == *lengths.iter().max().unwrap()) || drop_last);
        // Less padding than the plain shuffled order.
        let padded = |batches: &[Vec<usize>]| -> usize { batches.iter().map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap()).sum() };
        let plain: Vec<Vec<usize>> = epoch_order(n, 123, 1).chunks(batch_size).map(<[usize]>::to_vec).collect();
        if !drop_last {
            assert!(padded(&batches) < padded(&plain), "{} vs {}", padded(&batches), padded(&plain));
        }
    }
    let a = length_grouped_batches(&lengths, 123, 1, 8, false);
    assert_eq!(a, length_grouped_batches(&lengths, 123, 1, 8, false), "a function of its arguments");
    assert_ne!(a, length_grouped_batches(&lengths, 123, 2, 8, false), "another epoch, another order");
    assert_ne!(a, length_grouped_batches(&lengths, 124, 1, 8, false), "another seed, another order");

    // Many mega-batches: 1,000 examples, 4 a batch (mega-batches of 200).
    let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 301).collect();
    let batches = length_grouped_batches(&lengths, 5, 3, 4, false);
    let mut seen: Vec<usize> = batches.into_iter().flatten().collect();
    seen.sort();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}
