//! Model responses to instruction records on the tiny fixture model: batches generate exactly
//! what each prompt generates alone, the response is cut out of the generated text as the book
//! does, and the responses file is written atomically and read back.

use crate::common_http::fixtures;
use gpt::Tokenizer;
use gpt::burn::prelude::Device;
use gpt::generate::{GenerateConfig, generate};
use gpt::generate::sampling::Sampling;
use gpt::hf::load_model;
use pipelines::data::instruction::{InstructionRecord, format_input, read_records, split_records, write_splits};
use pipelines::eval::responses::{
    ResponseRecord, extract_response, generate_completions, generate_responses, load_test_data, read_responses,
    write_responses,
};
use pipelines::data::conversation::InstructionData;
use serde_json::Value;

fn test_records() -> Vec<InstructionRecord> {
    let records = read_records(&fixtures().join("data/instruction_data_60.json")).unwrap();
    split_records(records, false, 0).test
}

fn tiny_model() -> gpt::Gpt {
    load_model(fixtures().join("gpt2-tiny").to_str().unwrap(), &Device::flex(), 0).unwrap()
}

#[test]
fn the_response_is_the_text_after_the_header() {
    assert_eq!(extract_response("\n\n### Response:\nThe capital is Ottawa.\n"), "The capital is Ottawa.");
    assert_eq!(extract_response(" Ottawa"), "Ottawa");
    // Like the book's str.replace: every header goes, not only the first.
    assert_eq!(extract_response("### Response: yes\n### Response: no"), "yes\n no");
    assert_eq!(extract_response("\n\n### Response:\n"), "");
}

#[test]
fn batches_generate_what_each_prompt_generates_alone() {
    let model = tiny_model();
    let records = test_records();
    assert_eq!(records.len(), 6);
    let tokenizer = Tokenizer::gpt2();
    let greedy = GenerateConfig::greedy(16);
    let alone: Vec<Vec<u32>> = records
        .iter()
        .map(|r| generate(&model, &[tokenizer.encode_ordinary(&format_input(r))], &greedy).unwrap()[0].token_ids.clone())
        .collect();
    assert!(alone.iter().any(|ids| !ids.is_empty()));

    let mut calls = Vec::new();
    let batched = generate_completions(&model, &records, &greedy, 4, |done, total| calls.push((done, total))).unwrap();
    assert_eq!(calls, [(4, 6), (6, 6)]);
    for (i, completion) in batched.iter().enumerate() {
        assert_eq!(completion.token_ids, alone[i], "record {i}");
        assert_eq!(completion.prompt_ids, tokenizer.encode_ordinary(&format_input(&records[i])));
    }

    // The records come back with the decoded, stripped responses.
    let responses = generate_responses(&model, &records, &greedy, 3, |_, _| {}).unwrap();
    for (i, response) in responses.iter().enumerate() {
        let text = tokenizer.decode(&alone[i]).unwrap();
        assert_eq!(response.model_response, text.replace("### Response:", "").trim());
        assert_eq!(response.record(), records[i]);
    }
}

#[test]
fn sampled_responses_do_not_depend_on_the_batch_size() {
    let model = tiny_model();
    let records = test_records();
    let sampled = GenerateConfig { sampling: Sampling { temperature: 1.0, top_k: Some(40), top_p: None }, seed: 7, ..GenerateConfig::greedy(8) };
    let tokens = |batch_size| -> Vec<Vec<u32>> {
        generate_completions(&model, &records, &sampled, batch_size, |_, _| {}).unwrap().into_iter().map(|c| c.token_ids).collect()
    };
    let by_one = tokens(1);
    assert_eq!(tokens(4), by_one);
    assert_eq!(tokens(6), by_one);
    // Record k samples with seed 7 + k.
    let tokenizer = Tokenizer::gpt2();
    let third = GenerateConfig { seed: 9, ..sampled.clone() };
    let alone = generate(&model, &[tokenizer.encode_ordinary(&format_input(&records[2]))], &third).unwrap();
    assert_eq!(alone[0].token_ids, by_one[2]);
}

#[test]
fn the_responses_file_round_trips_and_is_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/test_responses.json");
    let records: Vec<ResponseRecord> = test_records()
        .iter()
        .enumerate()
        .map(|(i, r)| ResponseRecord::new(r, format!("response {i} \u{e9}")))
        .collect();
    write_responses(&out, &records).unwrap();
    assert_eq!(read_responses(&out).unwrap(), records);
    let json: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);
    assert_eq!(json[1]["model_response"], "response 1 \u{e9}");
    assert_eq!(json[1]["instruction"], records[1].instruction);
    let names: Vec<String> = std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["test_responses.json"]);

    // Records without a response are an error naming the record.
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, r#"[{"instruction": "i", "input": "", "output": "o", "model_response": "r"}, {"instruction": "i", "output": "o"}]"#).unwrap();
    let error = format!("{:#}", read_responses(&plain).unwrap_err());
    assert_eq!(error, format!("{}: record 1 has no \"model_response\"", plain.display()));
}

#[test]
fn test_records_come_from_a_file_or_a_directory_with_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let splits = split_records(read_records(&fixtures().join("data/instruction_data_60.json")).unwrap(), false, 0);
    write_splits(&dir.path().join("data"), &splits).unwrap();
    let cache = dir.path().join("cache");
    let load_test_records = |source: &str, cache: &std::path::Path| {
        load_test_data(source, cache).map(|loaded| match loaded {
            (file, InstructionData::Alpaca(records)) => (file, records),
            (file, _) => panic!("{} read as conversations", file.display()),
        })
    };

    let (file, records) = load_test_records(dir.path().to_str().unwrap(), &cache).unwrap();
    assert_eq!((file, records.clone()), (dir.path().join("data/test.json"), splits.test.clone()));
    let (_, same) = load_test_records(dir.path().join("data").to_str().unwrap(), &cache).unwrap();
    assert_eq!(same, splits.test);
    let (_, all) = load_test_records(fixtures().join("data/instruction_data_60.json").to_str().unwrap(), &cache).unwrap();
    assert_eq!(all.len(), 60);
    let empty = tempfile::tempdir().unwrap();
    let error = format!("{:#}", load_test_records(empty.path().to_str().unwrap(), &cache).unwrap_err());
    assert!(error.contains("without a test split"), "{error}");
}
