//! Fuzzing every data reader: the SMS collection (TSV and zip), the split CSVs, Alpaca JSON,
//! HellaSwag jsonl, `.npy` token shards, metrics.jsonl, judge replies, and FineWeb parquet files.
//! Each input gets data or an error that names the file (and the line or record where there is
//! one), never a panic. 10,000 cases per target (1,000 for parquet, whose every case runs the
//! whole shard preparation).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::common::fixtures;
use crate::gpt_common::fuzz::{json_value, mutated, mutated_bytes, object_with};
use pipelines::data::{fineweb, hellaswag, instruction, shards, spam};
use proptest::prelude::*;
use serde_json::{Value, json};

const CASES: u32 = 10_000;

/// Writes `bytes` to a fresh file named `name` and runs `read` on it; an error must name the file.
fn with_file<T>(name: &str, bytes: &[u8], read: impl FnOnce(&Path) -> anyhow::Result<T>) -> Option<T> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    match read(&path) {
        Ok(value) => Some(value),
        Err(error) => {
            let message = format!("{error:#}");
            assert!(message.contains(&path.display().to_string()), "the error does not name the file: {message}");
            None
        }
    }
}

/// Text made of the pieces these formats are built from, so that lines often almost parse.
fn tsv_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"ham\t".to_vec()), Just(b"spam\t".to_vec()), Just(b"SPAM \t".to_vec()), Just(b"\t".to_vec()),
        Just(b"\n".to_vec()), Just(b"\r\n".to_vec()), Just(b"\xEF\xBB\xBF".to_vec()), Just(b"\"".to_vec()),
        Just(b",".to_vec()), Just(b"0,".to_vec()), Just(b"1,".to_vec()), Just(b"Label,Text\n".to_vec()),
        "\\PC{0,12}".prop_map(String::into_bytes), proptest::collection::vec(any::<u8>(), 0..4),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn fixture_zip() -> &'static Vec<u8> {
    static ZIP: OnceLock<Vec<u8>> = OnceLock::new();
    ZIP.get_or_init(|| std::fs::read(fixtures().join("data/sms_spam_collection.zip")).unwrap())
}

fn valid_instruction_records() -> Value {
    json!([{"instruction": "Name a colour.", "input": "", "output": "Blue."},
           {"instruction": "Add.", "input": "2 + 2", "output": "4"}])
}

fn valid_hellaswag_line() -> Value {
    json!({"ind": 24, "ctx": "A man is sitting on a roof.", "label": 3, "split": "val",
           "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                       "is holding a rubik's cube.", "starts pulling up roofing on a roof."]})
}

/// A valid 1-D `<u2` shard of 64 tokens, as `np.save` writes it.
fn valid_npy() -> &'static Vec<u8> {
    static NPY: OnceLock<Vec<u8>> = OnceLock::new();
    NPY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.npy");
        shards::write_tokens(&path, &(0..64u16).map(|t| t * 1000).collect::<Vec<_>>(), shards::TokenType::Uint16).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// A small parquet file in FineWeb's layout: a `text` column of three documents.
fn valid_parquet() -> &'static Vec<u8> {
    static PARQUET: OnceLock<Vec<u8>> = OnceLock::new();
    PARQUET.get_or_init(|| {
        use arrow_array::{ArrayRef, RecordBatch, StringArray};
        let array: ArrayRef = Arc::new(StringArray::from(vec!["The cat sat.", "Water boils at 100 C.", "Photosynthesis."]));
        let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn any_sms_collection_text_parses_into_messages_and_counted_skips(bytes in prop_oneof![tsv_like(), proptest::collection::vec(any::<u8>(), 0..256)]) {
        let collection = spam::parse_collection(&bytes);
        prop_assert_eq!(collection.messages.len() + collection.skipped, collection.lines);
        prop_assert!(collection.first_skipped.len() <= collection.skipped);
        for message in &collection.messages {
            prop_assert!(message.label == spam::HAM || message.label == spam::SPAM);
            prop_assert!(!message.text.trim().is_empty());
        }
    }

    #[test]
    fn a_corrupt_zip_is_read_or_an_error_naming_it(bytes in mutated_bytes(fixture_zip().clone(), 64)) {
        if let Some(collection) = with_file("sms.zip", &bytes, spam::read_collection_zip) {
            prop_assert_eq!(collection.messages.len() + collection.skipped, collection.lines);
        }
    }

    #[test]
    fn any_split_csv_is_read_or_an_error_naming_it(bytes in prop_oneof![
        tsv_like().prop_map(|b| [b"Label,Text\n".to_vec(), b].concat()),
        tsv_like(),
    ]) {
        if let Some(messages) = with_file("train.csv", &bytes, spam::read_split_csv) {
            prop_assert!(messages.iter().all(|m| m.label == spam::HAM || m.label == spam::SPAM));
        }
    }

    #[test]
    fn any_alpaca_json_is_read_or_an_error_naming_it(value in prop_oneof![
        json_value(),
        proptest::collection::vec(object_with(&["instruction", "input", "output"]), 0..4).prop_map(Value::Array),
        mutated(valid_instruction_records()),
    ]) {
        let file = Path::new("/data/instruction-data.json");
        match instruction::parse_records(&value.to_string(), file) {
            Ok(records) => prop_assert_eq!(records.len(), value.as_array().map_or(0, Vec::len)),
            Err(error) => prop_assert!(format!("{error:#}").contains("instruction-data.json"), "{error:#}"),
        }
    }

    #[test]
    fn any_alpaca_bytes_are_read_or_an_error_naming_them(bytes in mutated_bytes(valid_instruction_records().to_string().into_bytes(), usize::MAX)) {
        with_file("data.json", &bytes, instruction::read_records);
    }

    #[test]
    fn any_hellaswag_jsonl_is_read_or_an_error_naming_file_and_line(lines in proptest::collection::vec(prop_oneof![
        3 => mutated(valid_hellaswag_line()).prop_map(|v| v.to_string()),
        1 => object_with(&["ind", "ctx", "endings", "label"]).prop_map(|v| v.to_string()),
        1 => "\\PC{0,24}",
    ], 0..5)) {
        let text = lines.join("\n");
        for read in [hellaswag::read_examples, hellaswag::read_unlabelled_examples] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("hellaswag_val.jsonl");
            std::fs::write(&path, &text).unwrap();
            match read(&path) {
                Ok(examples) => prop_assert!(examples.iter().all(|e| e.label.is_none_or(|l| l < 4))),
                Err(error) => {
                    let message = format!("{error:#}");
                    prop_assert!(message.contains(&path.display().to_string()) && message.contains("line"), "{}", message);
                }
            }
        }
    }

    #[test]
    fn a_corrupt_npy_shard_opens_whole_or_is_an_error_naming_it(bytes in mutated_bytes(valid_npy().clone(), 128)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edufineweb_train_000001.npy");
        std::fs::write(&path, &bytes).unwrap();
        match shards::TokenFile::open(&path) {
            // What opens holds exactly the tokens its header announces.
            Ok(file) => prop_assert_eq!(file.to_vec().len(), file.len()),
            Err(error) => prop_assert!(error.to_string().contains(&path.display().to_string()), "{}", error),
        }
    }

    #[test]
    fn any_metrics_file_is_read_or_an_error_naming_it(lines in proptest::collection::vec(prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        mutated(json!({"time": 1.5, "step": 3, "epoch": 1, "split": "train", "loss": 2.5})).prop_map(|v| v.to_string()),
    ], 0..5)) {
        with_file("metrics.jsonl", lines.join("\n").as_bytes(), pipelines::runs::read_metrics);
    }

    #[test]
    fn any_judge_reply_gives_a_score_in_range_or_none(reply in "\\PC{0,40}|[0-9 ./:,-]{0,24}|Score: [0-9]{1,4}") {
        if let Some(score) = pipelines::eval::judge::parse_score(&reply) {
            prop_assert!(score <= 100);
            prop_assert!(reply.contains(&score.to_string()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn a_corrupt_parquet_file_makes_shards_or_an_error_naming_it(bytes in mutated_bytes(valid_parquet().clone(), 64)) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("000_00000.parquet");
        std::fs::write(&input, &bytes).unwrap();
        let options = fineweb::PrepareOptions { shard_size: 16, workers: Some(1), ..Default::default() };
        let out = dir.path().join("shards");
        match fineweb::prepare_fineweb(&fineweb::Source::Local(input.clone()), &out, &options) {
            Ok(report) => prop_assert!(report.documents <= 3),
            Err(error) => {
                let message = format!("{error:#}");
                prop_assert!(message.contains(&input.display().to_string()), "{}", message);
                // Nothing half-written looks finished: no shard without its manifest entry.
                prop_assert!(!out.join("manifest.json").exists() || fineweb::Manifest::load(&out.join("manifest.json")).is_ok());
            }
        }
    }
}

#[test]
fn parquet_metadata_the_parquet_crate_panics_on_is_an_error_naming_the_file() {
    // Found by the fuzz test above: a column chunk with a negative size, on which parquet 60
    // asserts (panics) while reading instead of returning an error.
    let input = fixtures().join("data/corrupt_negative_offset.parquet");
    let dir = tempfile::tempdir().unwrap();
    let options = fineweb::PrepareOptions { shard_size: 16, workers: Some(1), ..Default::default() };
    let error = fineweb::prepare_fineweb(&fineweb::Source::Local(input.clone()), &dir.path().join("shards"), &options).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains(&input.display().to_string()), "{message}");
    assert!(message.contains("corrupt parquet metadata"), "{message}");
}

#[test]
fn the_valid_inputs_parse() {
    assert_eq!(instruction::parse_records(&valid_instruction_records().to_string(), Path::new("x.json")).unwrap().len(), 2);
    assert_eq!(with_file("v.jsonl", valid_hellaswag_line().to_string().as_bytes(), hellaswag::read_examples).unwrap().len(), 1);
    assert_eq!(with_file("s.npy", valid_npy(), |p| Ok(shards::TokenFile::open(p)?.len())), Some(64));
    assert!(with_file("c.zip", fixture_zip(), spam::read_collection_zip).unwrap().messages.len() > 100);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.parquet");
    std::fs::write(&input, valid_parquet()).unwrap();
    let options = fineweb::PrepareOptions { shard_size: 16, workers: Some(1), ..Default::default() };
    let report = fineweb::prepare_fineweb(&fineweb::Source::Local(input), &dir.path().join("out"), &options).unwrap();
    assert_eq!(report.documents, 3);
}
