//! chrF as sacrebleu 2.x computes it with its defaults (`CHRF()`: character n-grams of order 1..6
//! with white space removed, no word n-grams, β = 2, case-sensitive, no epsilon smoothing): the
//! F-β of the precision and recall averaged over the orders both sides have n-grams of.
//! [`corpus_chrf`] is `CHRF().corpus_score`, [`sentence_chrf`] `CHRF().sentence_score`.

use std::collections::HashMap;

use super::bleu::SACREBLEU_VERSION;
use super::python_split;

/// Character n-gram orders.
pub const CHAR_ORDER: usize = 6;
/// Recall weighs β² = 4 times as much as precision.
const BETA: f64 = 2.0;

/// The reproducibility signature sacrebleu prints for `CHRF()`.
pub fn signature() -> String {
    format!("nrefs:1|case:mixed|eff:yes|nc:{CHAR_ORDER}|nw:0|space:no|version:{SACREBLEU_VERSION}")
}

/// Per order: the hypothesis's n-grams (0 when the reference has none of that order), the
/// reference's, and the clipped matches. A corpus's statistics are the sums.
pub type ChrfStats = [[usize; 3]; CHAR_ORDER];

/// The character n-grams of order `n` of `chars`, and how often each occurs.
fn char_ngrams(chars: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut counts = HashMap::new();
    for ngram in chars.windows(n) {
        *counts.entry(ngram).or_insert(0) += 1;
    }
    counts
}

/// The statistics of `hypothesis` against one `reference`.
pub fn stats(reference: &str, hypothesis: &str) -> ChrfStats {
    // White space (Python's str.split rule) is removed, not replaced: "a b" and "ab" are the same.
    let reference: Vec<char> = python_split(reference).flat_map(str::chars).collect();
    let hypothesis: Vec<char> = python_split(hypothesis).flat_map(str::chars).collect();
    let mut stats = [[0; 3]; CHAR_ORDER];
    for (order, row) in stats.iter_mut().enumerate() {
        let reference_counts = char_ngrams(&reference, order + 1);
        let hypothesis_counts = char_ngrams(&hypothesis, order + 1);
        let matches = hypothesis_counts.iter().map(|(ngram, &count)| count.min(reference_counts.get(ngram).copied().unwrap_or(0))).sum();
        let hypothesis_total: usize = hypothesis_counts.values().sum();
        // sacrebleu counts no hypothesis n-grams for an order the reference has none of.
        *row = [if reference_counts.is_empty() { 0 } else { hypothesis_total }, reference_counts.values().sum(), matches];
    }
    stats
}

/// sacrebleu's `CHRF._compute_f_score` without epsilon smoothing, 0-100.
pub fn score(stats: &ChrfStats) -> f64 {
    let factor = BETA * BETA;
    let (mut precision, mut recall, mut orders) = (0.0, 0.0, 0);
    for &[n_hyp, n_ref, n_match] in stats {
        if n_hyp > 0 && n_ref > 0 {
            precision += n_match as f64 / n_hyp as f64;
            recall += n_match as f64 / n_ref as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return 0.0;
    }
    let (precision, recall) = (precision / orders as f64, recall / orders as f64);
    if precision + recall == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + factor) * precision * recall / (factor * precision + recall)
}

/// Corpus chrF of (reference, hypothesis) pairs: the statistics summed, then one score.
pub fn corpus_chrf<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let mut total: ChrfStats = [[0; 3]; CHAR_ORDER];
    for (reference, hypothesis) in pairs {
        for (sum, row) in total.iter_mut().zip(stats(reference, hypothesis)) {
            for k in 0..3 {
                sum[k] += row[k];
            }
        }
    }
    score(&total)
}

/// chrF of one hypothesis, 0-100.
pub fn sentence_chrf(reference: &str, hypothesis: &str) -> f64 {
    score(&stats(reference, hypothesis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::text_metrics::report::tests::{assert_close, fixture_pairs, reference_fixture};

    #[test]
    fn sentence_and_corpus_chrf_equal_sacrebleu() {
        let fixture = reference_fixture();
        let pairs = fixture_pairs(&fixture);
        for (i, (reference, hypothesis)) in pairs.iter().enumerate() {
            let want = fixture["pairs"][i]["chrf"].as_f64().expect("chrf");
            assert_close(sentence_chrf(reference, hypothesis), want, 1e-6, &format!("pair {i}: {reference:?} / {hypothesis:?}"));
        }
        let want = fixture["corpus"]["chrf"].as_f64().expect("corpus chrf");
        assert_close(corpus_chrf(pairs.iter().map(|(r, h)| (r.as_str(), h.as_str()))), want, 1e-6, "corpus chrF");
        assert_eq!(signature(), fixture["chrf_signature"].as_str().expect("signature"));
    }

    #[test]
    fn python_white_space_is_what_the_fixture_says() {
        let fixture = reference_fixture();
        let python: Vec<u32> = fixture["python_whitespace"].as_array().expect("list").iter().map(|c| c.as_u64().expect("code point") as u32).collect();
        let ours: Vec<u32> = (0..=0x10FFFFu32).filter(|&c| char::from_u32(c).is_some_and(crate::eval::text_metrics::is_python_space)).collect();
        assert_eq!(ours, python);
    }
}
