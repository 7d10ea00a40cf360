//! HellaSwag: parsing, rendering, download and scoring, against `tests/fixtures/hellaswag_tiny_reference.json`
//! (build-nanogpt's `evaluate` with transformers + tiktoken on the tiny fixture model and the 40
//! fixture rows; see scripts/reference/hellaswag_reference.py).

use std::path::{Path, PathBuf};

use crate::common_http::{Reply, Server, fixtures};
use gpt::burn::prelude::*;
use gpt::{Gpt, Tokenizer};
use pipelines::data::hellaswag::{
    self, Example, RenderedExample, Split, prepare, read_examples, read_unlabelled_examples, render_example, split_url,
};
use pipelines::eval::hellaswag::{HellaswagScores, default_batch_size, evaluate, score_batch, score_full_rows};
use serde_json::Value;

fn data_file() -> PathBuf {
    fixtures().join("data/hellaswag_val_40.jsonl")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("hellaswag_tiny_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference_examples() -> Vec<Value> {
    reference()["examples"].as_array().unwrap().clone()
}

fn tiny_model() -> Gpt {
    gpt::hf::load_model(fixtures().join("gpt2-tiny").to_str().unwrap(), &Device::flex(), 0).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn the_fixture_parses_with_its_keys() {
    let examples = read_examples(&data_file()).unwrap();
    assert_eq!(examples.len(), 40);
    let first = &examples[0];
    assert_eq!((first.ind, first.line, first.label), (24, 1, Some(3)));
    assert_eq!(first.ctx, "A man is sitting on a roof. he");
    assert_eq!(first.endings[3], "starts pulling up roofing on a roof.");
    let inds: Vec<u64> = examples.iter().map(|e| e.ind).collect();
    let expected: Vec<u64> = reference_examples().iter().map(|e| e["ind"].as_u64().unwrap()).collect();
    assert_eq!(inds, expected);
    assert_eq!(examples[39].line, 40);
}

#[test]
fn render_example_matches_tiktoken_for_every_row() {
    let tokenizer = Tokenizer::gpt2();
    let examples = read_examples(&data_file()).unwrap();
    for (example, expected) in examples.iter().zip(reference_examples()) {
        let rendered = render_example(&tokenizer, example);
        assert_eq!(rendered.ctx_tokens, ids(&expected["ctx_tokens"]), "ctx of ind {}", example.ind);
        for i in 0..4 {
            assert_eq!(rendered.ending_tokens[i], ids(&expected["ending_tokens"][i]), "ending {i} of ind {}", example.ind);
        }
        assert_eq!(rendered.label, Some(expected["label"].as_u64().unwrap() as usize));
    }
}

#[test]
fn render_example_pads_rows_and_masks_the_endings() {
    // ind 24: ctx "A man is sitting on a roof. he" = 9 tokens; endings of 11, 6, 8 and 9 tokens.
    let rendered = render_example(&Tokenizer::gpt2(), &read_examples(&data_file()).unwrap()[0]);
    assert_eq!(rendered.ctx_tokens, [32, 582, 318, 5586, 319, 257, 9753, 13, 339]);
    assert_eq!(rendered.ending_tokens[1], [318, 34759, 1241, 19867, 572, 13]);
    assert_eq!(rendered.width(), 20);
    let mut row1 = vec![32, 582, 318, 5586, 319, 257, 9753, 13, 339, 318, 34759, 1241, 19867, 572, 13];
    row1.resize(20, 0);
    assert_eq!(rendered.tokens[1], row1);
    let mut mask1 = vec![0u8; 9];
    mask1.extend([1u8; 6]);
    mask1.resize(20, 0);
    assert_eq!(rendered.mask[1], mask1);
    assert_eq!(rendered.mask[0], [[0u8; 9].as_slice(), &[1u8; 11]].concat(), "the longest row has no padding");
    for i in 0..4 {
        assert_eq!(rendered.tokens[i].len(), 20);
        assert_eq!(rendered.mask[i].iter().filter(|&&m| m == 1).count(), rendered.ending_tokens[i].len());
    }
}

/// Relative difference, for losses of order 10–300.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn assert_matches_reference(scores: &HellaswagScores) {
    let reference = reference();
    let tolerance = reference["loss_tolerance_rel"].as_f64().unwrap();
    assert_eq!(tolerance, 1e-5);
    let examples = reference_examples();
    assert_eq!(scores.n, 40);
    assert_eq!(scores.predictions.len(), examples.len());
    let mut worst: f64 = 0.0;
    for (prediction, expected) in scores.predictions.iter().zip(&examples) {
        let ind = prediction.ind;
        assert_eq!(ind, expected["ind"].as_u64().unwrap());
        for (ours, theirs) in prediction.losses.sum.iter().zip(floats(&expected["sum_loss"])) {
            assert!(rel(*ours, theirs) < tolerance, "ind {ind}: summed loss {ours} vs {theirs}");
            worst = worst.max(rel(*ours, theirs));
        }
        for (ours, theirs) in prediction.losses.mean.iter().zip(floats(&expected["mean_loss"])) {
            assert!(rel(*ours, theirs) < tolerance, "ind {ind}: mean loss {ours} vs {theirs}");
            worst = worst.max(rel(*ours, theirs));
        }
        assert_eq!(prediction.label as u64, expected["label"].as_u64().unwrap(), "ind {ind}");
        assert_eq!(prediction.pred as u64, expected["pred"].as_u64().unwrap(), "ind {ind}");
        assert_eq!(prediction.pred_norm as u64, expected["pred_norm"].as_u64().unwrap(), "ind {ind}");
    }
    eprintln!("largest relative loss difference to transformers: {worst:.2e}");
    // 10 and 12 of 40 right: a random model is at chance level.
    assert_eq!((scores.num_correct, scores.num_correct_norm), (10, 12));
    assert_eq!((scores.acc, scores.acc_norm), (0.25, 0.3));
    assert_eq!(scores.num_correct as u64, reference["num_correct"].as_u64().unwrap());
    assert_eq!(scores.num_correct_norm as u64, reference["num_correct_norm"].as_u64().unwrap());
}

#[test]
fn scores_match_transformers_at_every_batch_size() {
    let model = tiny_model();
    let examples = read_examples(&data_file()).unwrap();
    let mut progress = Vec::new();
    let batched = evaluate(&model, &examples, 5, |done| progress.push(done)).unwrap();
    assert_eq!(progress, [5, 10, 15, 20, 25, 30, 35, 40]);
    assert_matches_reference(&batched);

    // One example per pass (no padding across examples), and all 40 in one pass (the most padding):
    // the same predictions, and losses equal up to float rounding of differently shaped products.
    for batch_size in [1, 40] {
        let other = evaluate(&model, &examples, batch_size, |_| {}).unwrap();
        assert_matches_reference(&other);
        for (a, b) in other.predictions.iter().zip(&batched.predictions) {
            assert_eq!((a.ind, a.pred, a.pred_norm), (b.ind, b.pred, b.pred_norm));
            for (x, y) in a.losses.sum.iter().chain(&a.losses.mean).zip(b.losses.sum.iter().chain(&b.losses.mean)) {
                assert!(rel(*x, *y) < 1e-6, "ind {}: batch {batch_size} gives {x}, batch 5 gives {y}", a.ind);
            }
        }
    }
}

#[test]
fn one_example_per_pass_on_the_cpu() {
    assert_eq!(default_batch_size(&Device::flex()), 1);
}

#[test]
fn a_limit_scores_the_first_examples() {
    let examples = read_examples(&data_file()).unwrap();
    let scores = evaluate(&tiny_model(), &examples[..7], 3, |_| {}).unwrap();
    assert_eq!(scores.n, 7);
    let expected = &reference_examples()[..7];
    let correct = expected.iter().filter(|e| e["pred"] == e["label"]).count();
    let correct_norm = expected.iter().filter(|e| e["pred_norm"] == e["label"]).count();
    assert_eq!((scores.num_correct, scores.num_correct_norm), (correct, correct_norm));
    assert_eq!(scores.acc, correct as f64 / 7.0);
    assert_eq!(scores.acc_norm, correct_norm as f64 / 7.0);
}

#[test]
fn score_batch_scores_rendered_examples() {
    let model = tiny_model();
    assert!(score_batch::<RenderedExample>(&model, &[]).unwrap().is_empty());
    // Two examples of different widths (contexts and endings) in one pass, in either order: the
    // reference losses, with the context run once for its 4 endings and with whole rows.
    let examples = read_examples(&data_file()).unwrap();
    let rendered: Vec<RenderedExample> = [2, 0].iter().map(|&i| render_example(&Tokenizer::gpt2(), &examples[i])).collect();
    assert_ne!(rendered[0].width(), rendered[1].width());
    assert_ne!(rendered[0].ctx_tokens.len(), rendered[1].ctx_tokens.len());
    let reference = reference_examples();
    let scorers: [fn(&Gpt, &[&RenderedExample]) -> anyhow::Result<_>; 2] = [|m, b| score_batch(m, b), |m, b| score_full_rows(m, b)];
    for ((order, batch), score) in [([2, 0], vec![&rendered[0], &rendered[1]]), ([0, 2], vec![&rendered[1], &rendered[0]])]
        .into_iter()
        .flat_map(|case| scorers.map(|score| (case.clone(), score)))
    {
        let losses = score(&model, &batch).unwrap();
        for (i, scored) in order.iter().zip(&losses) {
            for (ours, theirs) in scored.sum.iter().zip(floats(&reference[*i]["sum_loss"])) {
                assert!(rel(*ours, theirs) < 1e-5, "example {i}: {ours} vs {theirs}");
            }
            assert_eq!(scored.pred() as u64, reference[*i]["pred"].as_u64().unwrap());
            assert_eq!(scored.pred_norm() as u64, reference[*i]["pred_norm"].as_u64().unwrap());
        }
    }
    let scores = evaluate(&tiny_model(), &[], 4, |_| panic!("no batch")).unwrap();
    assert_eq!((scores.n, scores.acc, scores.acc_norm), (0, 0.0, 0.0));
}

fn example(ctx: &str, label: Option<usize>) -> Example {
    Example {
        ind: 7,
        line: 3,
        ctx: ctx.to_string(),
        endings: ["a.".into(), "b c.".into(), "d".into(), "e f g.".into()],
        label,
    }
}

#[test]
fn rows_longer_than_the_context_and_missing_labels_are_errors() {
    let model = tiny_model(); // 128 positions
    let long = "word ".repeat(130);
    let error = evaluate(&model, &[example(&long, Some(0))], 1, |_| {}).unwrap_err().to_string();
    assert!(error.contains("line 3 (ind 7)") && error.contains("context of 128"), "{error}");

    let error = evaluate(&model, &[example("Some context.", None)], 1, |_| {}).unwrap_err().to_string();
    assert!(error.contains("line 3 (ind 7) has no label"), "{error}");

    // An empty context still scores (the first ending token is not: nothing predicts it) unless
    // an ending is a single token (" d" here): then that ending has nothing to score.
    let error = evaluate(&model, &[example("", Some(1))], 1, |_| {}).unwrap_err().to_string();
    assert!(error.contains("line 3 (ind 7) has an empty context and a one-token ending"), "{error}");
    let mut no_context = example("", Some(1));
    no_context.endings[2] = "d e".into();
    let scores = evaluate(&model, &[no_context.clone()], 1, |_| {}).unwrap();
    let with_context = evaluate(&model, &[Example { ctx: "x".into(), ..no_context.clone() }], 1, |_| {}).unwrap();
    let lengths = render_example(&Tokenizer::gpt2(), &no_context).ending_tokens.map(|e| e.len());
    assert_eq!(lengths, [2, 3, 2, 4]);
    for i in 0..4 {
        // sum / mean = the number of scored tokens: all of the ending's after a context, else all but the first.
        let (alone, after) = (&scores.predictions[0].losses, &with_context.predictions[0].losses);
        assert!(alone.sum[i].is_finite() && alone.sum[i] > 0.0);
        assert_eq!((alone.sum[i] / alone.mean[i]).round() as usize, lengths[i] - 1);
        assert_eq!((after.sum[i] / after.mean[i]).round() as usize, lengths[i]);
    }
}

/// Writes `lines` to a file and reads it back, returning the error message.
fn parse_error(dir: &Path, lines: &[&str]) -> String {
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let error = read_examples(&path).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "the message names the file: {error}");
    error
}

#[test]
fn bad_lines_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(data_file()).unwrap();
    let good: Vec<&str> = good.lines().take(2).collect();

    let cases = [
        (r#"{"ind": 1, "endings": ["a", "b", "c", "d"], "label": 0}"#, r#"line 3: missing key "ctx""#),
        (r#"{"ctx": "x", "endings": ["a", "b", "c"], "label": 0}"#, r#"line 3: "endings" has 3 entries, expected 4"#),
        (r#"{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 0"#, "line 3: not valid JSON"),
        (r#"{"ctx": "x", "endings": ["a", "b", "c", "d"]}"#, r#"line 3: missing key "label""#),
        (r#"{"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4}"#, r#"line 3: "label" must be an integer from 0 to 3, found 4"#),
        (r#"{"ctx": "x", "endings": ["a", "b", "c", 5], "label": 1}"#, "line 3: ending 3 must be a string, found a number"),
        (r#"{"ctx": ["x"], "endings": ["a", "b", "c", "d"], "label": 1}"#, r#"line 3: "ctx" must be a string, found a list"#),
        ("[1, 2]", "line 3: expected a JSON object, found a list"),
    ];
    for (bad, expected) in cases {
        let error = parse_error(dir.path(), &[good[0], "", bad, good[1]]);
        assert!(error.contains(expected), "{bad}: {error}");
    }
    // Blank lines are skipped, line numbers still count them.
    let path = dir.path().join("ok.jsonl");
    std::fs::write(&path, format!("{}\n\n{}\n", good[0], good[1])).unwrap();
    let examples = read_examples(&path).unwrap();
    assert_eq!(examples.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 3]);

    // The test split has no labels: readable as unlabelled, not as labelled.
    std::fs::write(&path, r#"{"ind": 5, "ctx": "x", "endings": ["a", "b", "c", "d"]}"#).unwrap();
    assert_eq!(read_unlabelled_examples(&path).unwrap()[0].label, None);
    assert!(read_examples(&path).unwrap_err().to_string().contains("line 1: missing key \"label\""));
    // Without "ind", an example is numbered by its position in the file.
    std::fs::write(&path, "{\"ctx\": \"x\", \"endings\": [\"a\", \"b\", \"c\", \"d\"], \"label\": 2}\n".repeat(2)).unwrap();
    assert_eq!(read_examples(&path).unwrap().iter().map(|e| e.ind).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn split_urls() {
    assert_eq!(split_url(hellaswag::DEFAULT_URL, Split::Val), "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl");
    assert_eq!(split_url("http://host/data", Split::Train), "http://host/data/hellaswag_train.jsonl");
    assert_eq!(split_url("file:///srv/hs/", Split::Test), "file:///srv/hs/hellaswag_test.jsonl");
    assert_eq!(split_url("/srv/hs", Split::Test), "/srv/hs/hellaswag_test.jsonl");
    assert_eq!("val".parse::<Split>(), Ok(Split::Val));
    assert!("dev".parse::<Split>().unwrap_err().contains("train, val or test"));
}

#[test]
fn prepare_downloads_once_from_a_local_server() {
    let fixture = std::fs::read(data_file()).unwrap();
    let server = Server::start(vec![("/data/hellaswag_val.jsonl", vec![Reply::Ok(fixture.clone())])]);
    let out = tempfile::tempdir().unwrap();
    let base = server.url("/data/");

    let prepared = prepare(&base, out.path(), &[Split::Val]).unwrap();
    assert_eq!(prepared.len(), 1);
    let val = &prepared[0];
    assert_eq!((val.split, val.examples, val.reused), (Split::Val, 40, false));
    assert_eq!(val.path, out.path().join("hellaswag_val.jsonl"));
    assert_eq!(std::fs::read(&val.path).unwrap(), fixture, "kept byte for byte");
    assert_eq!(server.request_count(), 1);

    // Cached: a second prepare, and the evaluation's download, ask the server nothing.
    let again = prepare(&base, out.path(), &[Split::Val]).unwrap();
    assert!(again[0].reused && again[0].examples == 40);
    let path = hellaswag::download_split(&base, out.path(), Split::Val).unwrap();
    assert_eq!(path, val.path);
    assert_eq!(server.request_count(), 1);
    let names: Vec<String> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["hellaswag_val.jsonl"], "no temporary file left");

    // A split the server does not have: an error naming the URL, nothing written.
    let error = format!("{:#}", prepare(&base, out.path(), &[Split::Train]).unwrap_err());
    assert!(error.contains("hellaswag_train.jsonl") && error.contains("404"), "{error}");
    assert!(!out.path().join("hellaswag_train.jsonl").exists());

    // A download that is not HellaSwag: the error names the downloaded file and the line.
    let server = Server::start(vec![("/hellaswag_val.jsonl", vec![Reply::Ok(b"<html>rate limited</html>\n".to_vec())])]);
    let other = tempfile::tempdir().unwrap();
    let error = format!("{:#}", prepare(&server.url("/"), other.path(), &[Split::Val]).unwrap_err());
    assert!(error.contains("hellaswag_val.jsonl line 1: not valid JSON"), "{error}");
}

#[test]
fn download_split_reads_a_local_directory_in_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data_file(), dir.path().join("hellaswag_val.jsonl")).unwrap();
    let cache = dir.path().join("cache");
    let path = hellaswag::download_split(dir.path().to_str().unwrap(), &cache, Split::Val).unwrap();
    assert_eq!(path, dir.path().join("hellaswag_val.jsonl"));
    assert!(!cache.exists());
    // prepare copies it into the data directory.
    let prepared = prepare(dir.path().to_str().unwrap(), &cache, &[Split::Val]).unwrap();
    assert_eq!(prepared[0].path, cache.join("hellaswag_val.jsonl"));
    assert_eq!(std::fs::read(&prepared[0].path).unwrap(), std::fs::read(data_file()).unwrap());
}

/// A Llama-family model (`llama-tiny`) with its own tokenizer against transformers + its
/// `tokenizer.json` (`tests/fixtures/hellaswag_llama_tiny_reference.json`, the same script).
#[test]
fn llama_family_models_score_as_transformers_does() {
    let text = std::fs::read_to_string(fixtures().join("hellaswag_llama_tiny_reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let tolerance = reference["loss_tolerance_rel"].as_f64().unwrap();
    let dir = fixtures().join("llama-tiny");
    let tokenizer = Tokenizer::from_model_dir(&dir).unwrap();
    let model = gpt::hf::load_language_model_dir(&dir, &Device::flex()).unwrap();
    let examples = read_examples(&data_file()).unwrap();
    let expected = reference["examples"].as_array().unwrap();
    for (example, expected) in examples.iter().zip(expected) {
        let rendered = render_example(&tokenizer, example);
        assert_eq!(rendered.ctx_tokens, ids(&expected["ctx_tokens"]), "ind {}", example.ind);
        let endings: Vec<Vec<u32>> = expected["ending_tokens"].as_array().unwrap().iter().map(ids).collect();
        assert_eq!(rendered.ending_tokens.to_vec(), endings, "ind {}", example.ind);
    }
    let scores = pipelines::eval::hellaswag::evaluate_with(&model, &tokenizer, &examples, 3, |_| {}).unwrap();
    for (prediction, expected) in scores.predictions.iter().zip(expected) {
        for (ours, theirs) in prediction.losses.sum.iter().zip(floats(&expected["sum_loss"])) {
            assert!(rel(*ours, theirs) < tolerance, "ind {}: summed loss {ours} vs {theirs}", prediction.ind);
        }
        for (ours, theirs) in prediction.losses.mean.iter().zip(floats(&expected["mean_loss"])) {
            assert!(rel(*ours, theirs) < tolerance, "ind {}: mean loss {ours} vs {theirs}", prediction.ind);
        }
        assert_eq!(prediction.pred as u64, expected["pred"].as_u64().unwrap(), "ind {}", prediction.ind);
        assert_eq!(prediction.pred_norm as u64, expected["pred_norm"].as_u64().unwrap(), "ind {}", prediction.ind);
    }
    assert_eq!((scores.num_correct, scores.num_correct_norm), (10, 13));
    assert_eq!(scores.num_correct as u64, reference["num_correct"].as_u64().unwrap());
    assert_eq!(scores.num_correct_norm as u64, reference["num_correct_norm"].as_u64().unwrap());
}
