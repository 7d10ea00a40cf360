//! sacrebleu's default BLEU tokenizer, `13a` (`Tokenizer13a`, equivalent to mteval-v13a.pl as
//! used by WMT): a few markup replacements, then spaces around punctuation, except `.` and `,`
//! inside numbers and `-` that does not follow a digit.

use std::sync::LazyLock;

use regex::Regex;

use super::python_split;

/// `TokenizerRegexp`'s substitutions, applied in order with Python's `re.sub` semantics (left to
/// right, not overlapping), which the regex crate's `replace_all` shares.
static RULES: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
    let rule = |pattern: &str, replacement| (Regex::new(pattern).expect("a valid pattern"), replacement);
    [
        // every ASCII punctuation mark but ' , - . (those depend on their neighbours)
        rule(r"([{-~\[-`\x20-&(-+:-@/])", " ${1} "),
        // . and , after a non-digit, or before one
        rule(r"([^0-9])([.,])", "${1} ${2} "),
        rule(r"([.,])([^0-9])", " ${1} ${2}"),
        // - after a digit
        rule(r"([0-9])(-)", "${1} ${2} "),
    ]
});

/// The tokenised line: tokens joined by single spaces.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (pattern, replacement) in RULES.iter() {
        line = pattern.replace_all(&line, *replacement).into_owned();
    }
    python_split(&line).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::text_metrics::report::tests::reference_fixture;

    #[test]
    fn tokens_equal_sacrebleus_13a() {
        let fixture = reference_fixture();
        for (i, pair) in fixture["pairs"].as_array().expect("pairs").iter().enumerate() {
            for side in ["reference", "hypothesis"] {
                let text = pair[side].as_str().expect("text");
                // sacrebleu tokenises `sent.rstrip()`.
                let got = tokenize_13a(text.trim_end_matches(crate::eval::text_metrics::is_python_space));
                assert_eq!(got, pair[format!("tok13a_{side}")].as_str().expect("tokens"), "pair {i} {side}: {text:?}");
            }
        }
    }

    #[test]
    fn numbers_keep_their_points_and_commas() {
        assert_eq!(tokenize_13a("It costs $3.50, or 1,000 yen (approx.)"), "It costs $ 3.50 , or 1,000 yen ( approx . )");
    }
}
