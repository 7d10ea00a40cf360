//! Reference-based scores of generated text, each exactly as the package people quote it from:
//! ROUGE-1/2/L/Lsum F1 as Google's `rouge-score` 0.1.2 computes them ([`rouge`], with nltk's Porter
//! stemmer in [`porter`]), BLEU and chrF as `sacrebleu` 2.x with its defaults ([`bleu`] with the 13a
//! tokenizer of [`tokenizer_13a`], [`chrf`]), and exact match; [`report`] scores a responses file.
//! The expected values (tests/fixtures/text_metrics_reference.json) come from
//! scripts/reference/text_metrics_reference.py.

pub mod bleu;
pub mod chrf;
pub mod porter;
pub mod report;
pub mod rouge;
pub mod tokenizer_13a;

/// Whether Python's `str.split()` / `str.strip()` treat `c` as white space: Unicode's White_Space
/// (Rust's `char::is_whitespace`) plus the ASCII separators U+001C..U+001F. sacrebleu splits with
/// Python's rule, so a stray U+001F must split here too.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `text.split()`: the words between runs of white space.
pub(crate) fn python_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_space).filter(|w| !w.is_empty())
}
