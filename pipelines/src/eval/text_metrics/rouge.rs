//! ROUGE F1 as Google's `rouge-score` 0.1.2 computes it (`rouge_scorer.RougeScorer(types,
//! use_stemmer=…).score(target, prediction)[type].fmeasure`): its tokenizer, n-gram overlap for
//! rouge1/rouge2, the LCS for rougeL, and the summary-level union LCS over newline-separated
//! sentences for rougeLsum.

use std::collections::HashMap;

use super::porter;

/// F1 of each ROUGE variant for one (reference, hypothesis) pair, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RougeScores {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
    pub rouge_lsum: f64,
}

/// rouge-score's tokenizer: lowercase, every run of characters outside `[a-z0-9]` becomes a space,
/// split; with `stem`, nltk's Porter stemmer on tokens longer than 3 characters.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    // Python's lower() and Rust's to_lowercase agree on the few non-ASCII letters that lowercase
    // to ASCII (the Kelvin sign → k, İ → i + a combining dot).
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|token| !token.is_empty())
        .map(|token| if stem && token.len() > 3 { porter::stem(token) } else { token.to_string() })
        // rouge-score's last check drops tokens that are not [a-z0-9]+ (none are, after the stemmer).
        .filter(|token| !token.is_empty() && token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .collect()
}

/// The four F1 scores of `hypothesis` against `reference`.
pub fn score(reference: &str, hypothesis: &str, stem: bool) -> RougeScores {
    let target = tokenize(reference, stem);
    let prediction = tokenize(hypothesis, stem);
    let sentences = |text: &str| -> Vec<Vec<String>> {
        // rougeLsum's sentences are the lines; empty lines are dropped before tokenising.
        text.split('\n').filter(|line| !line.is_empty()).map(|line| tokenize(line, stem)).collect()
    };
    RougeScores {
        rouge1: ngram_f1(&target, &prediction, 1),
        rouge2: ngram_f1(&target, &prediction, 2),
        rouge_l: lcs_f1(&target, &prediction),
        rouge_lsum: summary_lcs_f1(&sentences(reference), &sentences(hypothesis)),
    }
}

/// rouge-score's `scoring.fmeasure`.
fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for ngram in tokens.windows(n) {
        *counts.entry(ngram).or_insert(0) += 1;
    }
    counts
}

/// ROUGE-N: clipped n-gram overlap; an empty side counts as one n-gram (precision and recall 0).
fn ngram_f1(target: &[String], prediction: &[String], n: usize) -> f64 {
    let target_counts = ngram_counts(target, n);
    let prediction_counts = ngram_counts(prediction, n);
    let overlap: usize = target_counts.iter().map(|(ngram, &count)| count.min(prediction_counts.get(ngram).copied().unwrap_or(0))).sum();
    let target_total: usize = target_counts.values().sum();
    let prediction_total: usize = prediction_counts.values().sum();
    fmeasure(overlap as f64 / prediction_total.max(1) as f64, overlap as f64 / target_total.max(1) as f64)
}

/// The LCS length table of `a` and `b`: `table[i][j]` for the prefixes `a[..i]`, `b[..j]`.
fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut table = vec![vec![0; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i][j] = if a[i - 1] == b[j - 1] { table[i - 1][j - 1] + 1 } else { table[i - 1][j].max(table[i][j - 1]) };
        }
    }
    table
}

/// ROUGE-L: longest common subsequence over the whole token lists.
fn lcs_f1(target: &[String], prediction: &[String]) -> f64 {
    if target.is_empty() || prediction.is_empty() {
        return 0.0;
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()] as f64;
    fmeasure(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// The indices into `reference` of one longest common subsequence with `candidate`, picked by
/// rouge-score's backtrack (its tie-break decides which tokens the union LCS counts).
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let table = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i][j - 1] > table[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices
}

/// ROUGE-Lsum (summary-level LCS, section 3.2 of the ROUGE paper, as ROUGE-1.5.5): for each
/// reference sentence, the union of its LCS with every candidate sentence; each token is counted
/// at most as often as it occurs on both sides.
fn summary_lcs_f1(reference: &[Vec<String>], candidate: &[Vec<String>]) -> f64 {
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = candidate.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return 0.0;
    }
    let mut left_in_reference: HashMap<&str, usize> = HashMap::new();
    let mut left_in_candidate: HashMap<&str, usize> = HashMap::new();
    for token in reference.iter().flatten() {
        *left_in_reference.entry(token).or_insert(0) += 1;
    }
    for token in candidate.iter().flatten() {
        *left_in_candidate.entry(token).or_insert(0) += 1;
    }
    let mut hits = 0usize;
    for sentence in reference {
        let mut union: Vec<usize> = candidate.iter().flat_map(|c| lcs_indices(sentence, c)).collect();
        union.sort_unstable();
        union.dedup();
        for token in union.into_iter().map(|i| sentence[i].as_str()) {
            let (Some(r), Some(c)) = (left_in_reference.get_mut(token), left_in_candidate.get_mut(token)) else { continue };
            if *r > 0 && *c > 0 {
                hits += 1;
                *r -= 1;
                *c -= 1;
            }
        }
    }
    fmeasure(hits as f64 / n as f64, hits as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::text_metrics::report::tests::{assert_close, reference_fixture};

    #[test]
    fn f1_equals_rouge_score_with_and_without_the_stemmer() {
        let fixture = reference_fixture();
        let pairs = fixture["pairs"].as_array().expect("pairs");
        assert!(pairs.len() >= 50);
        for (i, pair) in pairs.iter().enumerate() {
            let (reference, hypothesis) = (pair["reference"].as_str().expect("reference"), pair["hypothesis"].as_str().expect("hypothesis"));
            for (stem, key) in [(false, "rouge"), (true, "rouge_stemmed")] {
                let got = score(reference, hypothesis, stem);
                let expected = &pair[key];
                for (name, value) in [("rouge1", got.rouge1), ("rouge2", got.rouge2), ("rougeL", got.rouge_l), ("rougeLsum", got.rouge_lsum)] {
                    let want = expected[name].as_f64().expect("a number");
                    assert_close(value, want, 1e-6, &format!("pair {i} {key}.{name}: {reference:?} / {hypothesis:?}"));
                }
            }
        }
    }

    #[test]
    fn the_tokenizer_keeps_only_lowercase_ascii_words() {
        assert_eq!(tokenize("Hello, WORLD! Café 3.14", false), ["hello", "world", "caf", "3", "14"]);
        assert_eq!(tokenize("running quickly", true), ["run", "quickli"]);
        assert!(tokenize("!!! ... ---", false).is_empty());
    }
}
