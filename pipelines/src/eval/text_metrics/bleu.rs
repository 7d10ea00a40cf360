//! BLEU as sacrebleu 2.x computes it with its defaults (`BLEU()`: one reference, case-sensitive,
//! the 13a tokenizer, `exp` smoothing (mteval-v13a's), n-grams up to 4, the brevity penalty):
//! [`corpus_bleu`] is `BLEU().corpus_score`, [`sentence_bleu`] is `sacrebleu.sentence_bleu`
//! (the same with the effective order, as sacrebleu recommends for one sentence).

use std::collections::HashMap;

use super::tokenizer_13a::tokenize_13a;
use super::{is_python_space, python_split};

/// The highest n-gram order.
pub const MAX_ORDER: usize = 4;
/// The sacrebleu release whose numbers and signature these are.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// The reproducibility signature sacrebleu prints for `BLEU()`.
pub fn signature(effective_order: bool) -> String {
    let eff = if effective_order { "yes" } else { "no" };
    format!("nrefs:1|case:mixed|eff:{eff}|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}")
}

/// One segment's sufficient statistics; a corpus's are their sums.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BleuStats {
    pub hypothesis_len: usize,
    pub reference_len: usize,
    /// Clipped n-gram matches, n = 1..=4.
    pub correct: [usize; MAX_ORDER],
    /// Hypothesis n-grams, n = 1..=4.
    pub total: [usize; MAX_ORDER],
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, other: Self) {
        self.hypothesis_len += other.hypothesis_len;
        self.reference_len += other.reference_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

/// The 13a tokens of a segment (sacrebleu tokenises `sent.rstrip()`).
fn tokens(text: &str) -> Vec<String> {
    python_split(&tokenize_13a(text.trim_end_matches(is_python_space))).map(str::to_string).collect()
}

/// Every n-gram of order 1..=4 and how often it occurs.
fn ngram_counts(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for ngram in tokens.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// The statistics of `hypothesis` against one `reference`.
pub fn stats(reference: &str, hypothesis: &str) -> BleuStats {
    let (reference, hypothesis) = (tokens(reference), tokens(hypothesis));
    let reference_counts = ngram_counts(&reference);
    let mut stats = BleuStats { hypothesis_len: hypothesis.len(), reference_len: reference.len(), ..Default::default() };
    for (ngram, count) in ngram_counts(&hypothesis) {
        let n = ngram.len() - 1;
        stats.total[n] += count;
        stats.correct[n] += count.min(reference_counts.get(ngram).copied().unwrap_or(0));
    }
    stats
}

/// sacrebleu's `my_log`: log, with log(0) floored to -9999999999 (the score then is 0).
fn floored_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// sacrebleu's `BLEU.compute_bleu` with `exp` smoothing: 100 × BP × the geometric mean of the
/// n-gram precisions; an order without matches gets 100 / (2^k × total) for its k-th such order.
/// With `effective_order`, orders after the first one without hypothesis n-grams are left out.
pub fn score(stats: &BleuStats, effective_order: bool) -> f64 {
    let (sys_len, ref_len) = (stats.hypothesis_len as f64, stats.reference_len as f64);
    let brevity_penalty = if sys_len >= ref_len {
        1.0
    } else if sys_len > 0.0 {
        (1.0 - ref_len / sys_len).exp()
    } else {
        0.0
    };
    if stats.correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0;
    let mut order = MAX_ORDER;
    for (n, precision) in precisions.iter_mut().enumerate() {
        if stats.total[n] == 0 {
            break;
        }
        if effective_order {
            order = n + 1;
        }
        let total = stats.total[n] as f64;
        *precision = if stats.correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total)
        } else {
            100.0 * stats.correct[n] as f64 / total
        };
    }
    let log_sum = precisions[..order].iter().fold(0.0, |sum, &p| sum + floored_log(p));
    brevity_penalty * (log_sum / order as f64).exp()
}

/// Corpus BLEU of (reference, hypothesis) pairs, 0-100.
pub fn corpus_bleu<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let mut total = BleuStats::default();
    for (reference, hypothesis) in pairs {
        total += stats(reference, hypothesis);
    }
    score(&total, false)
}

/// BLEU of one hypothesis, 0-100, as `sacrebleu.sentence_bleu(hypothesis, [reference])`.
pub fn sentence_bleu(reference: &str, hypothesis: &str) -> f64 {
    score(&stats(reference, hypothesis), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::text_metrics::report::tests::{assert_close, fixture_pairs, reference_fixture};

    #[test]
    fn sentence_and_corpus_bleu_equal_sacrebleu() {
        let fixture = reference_fixture();
        let pairs = fixture_pairs(&fixture);
        for (i, (reference, hypothesis)) in pairs.iter().enumerate() {
            let want = fixture["pairs"][i]["bleu"].as_f64().expect("bleu");
            assert_close(sentence_bleu(reference, hypothesis), want, 1e-6, &format!("pair {i}: {reference:?} / {hypothesis:?}"));
        }
        let want = fixture["corpus"]["bleu"].as_f64().expect("corpus bleu");
        assert_close(corpus_bleu(pairs.iter().map(|(r, h)| (r.as_str(), h.as_str()))), want, 1e-6, "corpus BLEU");
    }

    #[test]
    fn the_signatures_are_sacrebleus() {
        let fixture = reference_fixture();
        assert_eq!(fixture["versions"]["sacrebleu"], SACREBLEU_VERSION);
        assert_eq!(signature(false), fixture["bleu_signature"].as_str().expect("signature"));
        assert_eq!(signature(true), fixture["sentence_bleu_signature"].as_str().expect("signature"));
    }

    #[test]
    fn a_short_hypothesis_pays_the_brevity_penalty() {
        let stats = stats("a b c d e f g h", "a b c d");
        assert_eq!((stats.correct, stats.total), ([4, 3, 2, 1], [4, 3, 2, 1]));
        assert_close(score(&stats, false), 100.0 * (1.0f64 - 2.0).exp(), 1e-9, "BP only");
    }
}
