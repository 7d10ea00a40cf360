//! Text scores of a responses file: each record's reference (`output`) and hypothesis
//! (`model_response`) scored with the chosen metrics, per record and over the file. ROUGE and
//! exact match are means of the records' scores (0-1, as rouge-score reports them); BLEU and chrF
//! are corpus scores (0-100, as sacrebleu reports them: statistics summed, then one score), while
//! each record's BLEU / chrF is its sentence score.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;

use super::{bleu, chrf, rouge};
use crate::data::instruction::{required_field, to_pretty_json};
use crate::data::records::read_records;

/// The rouge-score release whose tokenizer and scores [`rouge`] reproduces.
pub const ROUGE_SCORE_VERSION: &str = "0.1.2";
/// The nltk release whose Porter stemmer `--stemmer` reproduces.
pub const NLTK_VERSION: &str = "3.10.4";

/// A family of scores `--metrics` chooses.
#[derive(clap::ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1.
    Rouge,
    /// Corpus BLEU (sacrebleu's defaults), sentence BLEU per record.
    Bleu,
    /// Reference and response equal after stripping white space at both ends.
    Exact,
    /// chrF (sacrebleu's defaults), corpus and per record.
    Chrf,
}

/// One (reference, hypothesis) pair and where it is in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPair {
    /// `record N` / `line N`, as the file reader names it.
    pub at: String,
    pub reference: String,
    pub hypothesis: String,
}

/// Reads the pairs of a responses file: a JSON list or JSONL (any format the record reader
/// knows), `reference_field` and `response_field` string fields of each record.
pub fn read_pairs(path: &Path, reference_field: &str, response_field: &str) -> Result<Vec<TextPair>> {
    let columns = [reference_field.to_string(), response_field.to_string()];
    read_records(path, Some(&columns))?
        .iter()
        .map(|record| {
            let object = record.object()?;
            Ok(TextPair {
                at: record.at.clone(),
                reference: required_field(object, reference_field, &record.at, path)?,
                hypothesis: required_field(object, response_field, &record.at, path)?,
            })
        })
        .collect()
}

/// Scores, the chosen metrics' only. Field order is the `--json` line's key order.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct Scores {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<f64>,
    #[serde(rename = "rougeL", skip_serializing_if = "Option::is_none")]
    pub rouge_l: Option<f64>,
    #[serde(rename = "rougeLsum", skip_serializing_if = "Option::is_none")]
    pub rouge_lsum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chrf: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<f64>,
}

/// One record's scores (sentence BLEU and chrF).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RecordScores {
    /// The record's position in the file, from 0.
    pub index: usize,
    pub at: String,
    #[serde(flatten)]
    pub scores: Scores,
}

/// The `--json` summary: the number of records and the file's scores.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub n: usize,
    #[serde(flatten)]
    pub scores: Scores,
}

/// What the report file holds.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TextReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responses: Option<PathBuf>,
    pub metrics: Vec<Metric>,
    pub stemmer: bool,
    /// The reference implementations the numbers equal, with their versions and signatures.
    pub matches: Vec<String>,
    #[serde(flatten)]
    pub summary: Summary,
    pub records: Vec<RecordScores>,
}

/// Scores every pair with `metrics` (`stemmer`: rouge-score's `use_stemmer=True`).
pub fn score_pairs(pairs: &[TextPair], metrics: &[Metric], stemmer: bool) -> TextReport {
    let has = |metric| metrics.contains(&metric);
    let records: Vec<RecordScores> = pairs
        .par_iter()
        .enumerate()
        .map(|(index, pair)| {
            let (reference, hypothesis) = (pair.reference.as_str(), pair.hypothesis.as_str());
            let rouge = has(Metric::Rouge).then(|| rouge::score(reference, hypothesis, stemmer));
            let scores = Scores {
                rouge1: rouge.map(|r| r.rouge1),
                rouge2: rouge.map(|r| r.rouge2),
                rouge_l: rouge.map(|r| r.rouge_l),
                rouge_lsum: rouge.map(|r| r.rouge_lsum),
                bleu: has(Metric::Bleu).then(|| bleu::sentence_bleu(reference, hypothesis)),
                chrf: has(Metric::Chrf).then(|| chrf::sentence_chrf(reference, hypothesis)),
                exact: has(Metric::Exact).then(|| f64::from(u8::from(reference.trim() == hypothesis.trim()))),
            };
            RecordScores { index, at: pair.at.clone(), scores }
        })
        .collect();

    let mean = |score: fn(&Scores) -> Option<f64>| -> Option<f64> {
        let values: Vec<f64> = records.iter().filter_map(|r| score(&r.scores)).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let corpus = || pairs.iter().map(|p| (p.reference.as_str(), p.hypothesis.as_str()));
    let scores = Scores {
        rouge1: mean(|s| s.rouge1),
        rouge2: mean(|s| s.rouge2),
        rouge_l: mean(|s| s.rouge_l),
        rouge_lsum: mean(|s| s.rouge_lsum),
        bleu: (has(Metric::Bleu) && !pairs.is_empty()).then(|| bleu::corpus_bleu(corpus())),
        chrf: (has(Metric::Chrf) && !pairs.is_empty()).then(|| chrf::corpus_chrf(corpus())),
        exact: mean(|s| s.exact),
    };

    let mut matches = Vec::new();
    if has(Metric::Rouge) {
        let stemmer = if stemmer { format!(", use_stemmer=True: nltk {NLTK_VERSION} PorterStemmer (NLTK_EXTENSIONS)") } else { String::new() };
        matches.push(format!("ROUGE F1: rouge-score {ROUGE_SCORE_VERSION} RougeScorer{stemmer}"));
    }
    if has(Metric::Bleu) {
        matches.push(format!("corpus BLEU: sacrebleu BLEU() {}", bleu::signature(false)));
        matches.push(format!("record BLEU: sacrebleu.sentence_bleu {}", bleu::signature(true)));
    }
    if has(Metric::Chrf) {
        matches.push(format!("chrF (corpus and record): sacrebleu CHRF() {}", chrf::signature()));
    }
    TextReport {
        responses: None,
        metrics: metrics.to_vec(),
        stemmer,
        matches,
        summary: Summary { n: pairs.len(), scores },
        records,
    }
}

/// Where the report goes by default: beside the responses file, `NAME.text-scores.json`.
pub fn default_report_path(responses: &Path) -> PathBuf {
    let stem = responses.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    responses.with_file_name(format!("{stem}.text-scores.json"))
}

/// Writes the report as pretty JSON, atomically; creates the parent directory.
pub fn write_report(path: &Path, report: &TextReport) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    gpt::io::write_atomic(path, &to_pretty_json(report)?)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// tests/fixtures/text_metrics_reference.json (scripts/reference/text_metrics_reference.py's output).
    pub(crate) fn reference_fixture() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/text_metrics_reference.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("the fixture is JSON")
    }

    /// The fixture's (reference, hypothesis) pairs.
    pub(crate) fn fixture_pairs(fixture: &Value) -> Vec<(String, String)> {
        let text = |v: &Value| v.as_str().expect("a string").to_string();
        fixture["pairs"].as_array().expect("pairs").iter().map(|p| (text(&p["reference"]), text(&p["hypothesis"]))).collect()
    }

    pub(crate) fn assert_close(got: f64, want: f64, tolerance: f64, what: &str) {
        assert!((got - want).abs() <= tolerance, "{what}: {got} != {want} (tolerance {tolerance})");
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<TextPair> {
        list.iter().enumerate().map(|(i, (r, h))| TextPair { at: format!("record {}", i + 1), reference: r.to_string(), hypothesis: h.to_string() }).collect()
    }

    #[test]
    fn the_file_scores_are_record_means_and_corpus_scores() {
        let fixture = reference_fixture();
        let all: Vec<TextPair> =
            fixture_pairs(&fixture).into_iter().enumerate().map(|(i, (reference, hypothesis))| TextPair { at: format!("record {}", i + 1), reference, hypothesis }).collect();
        let report = score_pairs(&all, &[Metric::Rouge, Metric::Bleu, Metric::Chrf, Metric::Exact], false);
        let scores = report.summary.scores;
        assert_close(scores.bleu.expect("bleu"), fixture["corpus"]["bleu"].as_f64().expect("bleu"), 1e-6, "corpus BLEU");
        assert_close(scores.chrf.expect("chrf"), fixture["corpus"]["chrf"].as_f64().expect("chrf"), 1e-6, "corpus chrF");
        let rouge_l_mean = fixture["pairs"].as_array().expect("pairs").iter().map(|p| p["rouge"]["rougeL"].as_f64().expect("rougeL")).sum::<f64>() / all.len() as f64;
        assert_close(scores.rouge_l.expect("rougeL"), rouge_l_mean, 1e-9, "mean rougeL");
        for (i, record) in report.records.iter().enumerate() {
            assert_close(record.scores.bleu.expect("bleu"), fixture["pairs"][i]["bleu"].as_f64().expect("bleu"), 1e-6, "sentence BLEU");
        }
    }

    #[test]
    fn only_the_chosen_metrics_are_reported_in_the_summary_order() {
        let report = score_pairs(&pairs(&[("The cat.", " The cat.\n"), ("a b", "a c")]), &[Metric::Exact, Metric::Rouge], false);
        let line = serde_json::to_string(&report.summary).expect("json");
        assert_eq!(line, r#"{"n":2,"rouge1":0.75,"rouge2":0.5,"rougeL":0.75,"rougeLsum":0.75,"exact":0.5}"#);
        assert_eq!(report.records[0].scores.exact, Some(1.0));
        assert_eq!(report.matches, [format!("ROUGE F1: rouge-score {ROUGE_SCORE_VERSION} RougeScorer")]);
    }

    #[test]
    fn pairs_come_from_json_lists_and_jsonl_with_chosen_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("responses.json");
        std::fs::write(&list, r#"[{"instruction": "i", "output": "ref", "model_response": "hyp"}]"#).expect("write");
        let read = read_pairs(&list, "output", "model_response").expect("read");
        assert_eq!(read, [TextPair { at: "record 1".into(), reference: "ref".into(), hypothesis: "hyp".into() }]);

        let lines = dir.path().join("responses.jsonl");
        std::fs::write(&lines, "{\"gold\": \"a\", \"pred\": \"b\"}\n{\"gold\": \"c\", \"pred\": 3}\n").expect("write");
        let error = read_pairs(&lines, "gold", "pred").expect_err("a number is not a response").to_string();
        assert!(error.contains("responses.jsonl") && error.contains("line 2") && error.contains("\"pred\""), "{error}");
        let error = read_pairs(&lines, "gold", "answer").expect_err("no such field").to_string();
        assert!(error.contains("line 1 has no \"answer\""), "{error}");
        assert_eq!(default_report_path(&lines), dir.path().join("responses.text-scores.json"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any text (words, punctuation, digits, white space of every kind, any character) scores
        /// in range without a panic; a text against itself is an exact match with ROUGE 1 when it
        /// has a word, and chrF 100 when it has a character that is not white space.
        #[test]
        fn any_text_scores_in_range(
            reference in "([a-zA-Z0-9]{1,6}|[ \\n\\t\\u{1f}\\u{a0}.,;:!?&<>'\"-]|\\PC){0,40}",
            hypothesis in "([a-zA-Z0-9]{1,6}|[ \\n\\t\\u{1f}\\u{a0}.,;:!?&<>'\"-]|\\PC){0,40}",
            stemmer in proptest::bool::ANY,
        ) {
            let all = [Metric::Rouge, Metric::Bleu, Metric::Chrf, Metric::Exact];
            let report = score_pairs(&pairs(&[(&reference, &hypothesis), (&reference, &reference)]), &all, stemmer);
            for scores in report.records.iter().map(|r| r.scores).chain([report.summary.scores]) {
                for fraction in [scores.rouge1, scores.rouge2, scores.rouge_l, scores.rouge_lsum, scores.exact] {
                    let fraction = fraction.expect("chosen");
                    proptest::prop_assert!((0.0..=1.0 + 1e-12).contains(&fraction), "{fraction}");
                }
                for percent in [scores.bleu, scores.chrf] {
                    let percent = percent.expect("chosen");
                    proptest::prop_assert!((0.0..=100.0 + 1e-9).contains(&percent), "{percent}");
                }
            }
            let same = report.records[1].scores;
            proptest::prop_assert_eq!(same.exact, Some(1.0));
            if !rouge::tokenize(&reference, stemmer).is_empty() {
                proptest::prop_assert!((same.rouge_l.expect("rougeL") - 1.0).abs() < 1e-12);
            }
            if reference.chars().any(|c| !crate::eval::text_metrics::is_python_space(c)) {
                proptest::prop_assert!((same.chrf.expect("chrf") - 100.0).abs() < 1e-9);
            }
        }
    }
}
