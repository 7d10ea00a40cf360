//! The hand-written pre-tokeniser and encoder against tiktoken-rs's (GPT-2's pattern through
//! fancy_regex, then tiktoken's BPE): the same pieces and the same tokens on generated text that is
//! dense in the cases the pattern decides (spaces before words, whitespace runs, contractions,
//! letters / numbers / other of several scripts, combining marks, `<|endoftext|>`), and the same
//! character classes for every code point. The FineWeb shard tests compare whole documents with
//! tiktoken in Python as well.

use std::sync::OnceLock;

use fancy_regex::Regex;
use gpt::{text::pretokenize, Tokenizer};
use proptest::prelude::*;

/// tiktoken's `r50k_base` pattern, as tiktoken-rs compiles it.
const GPT2_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

fn pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| Regex::new(GPT2_PATTERN).unwrap())
}

fn regex_pieces(text: &str) -> Vec<&str> {
    pattern().find_iter(text).map(|m| m.unwrap().as_str()).collect()
}

fn reference() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

/// Bits of text the pattern's alternatives turn on, and any character at all.
fn text() -> impl Strategy<Value = String> {
    let bits = prop::sample::select(vec![
        " ", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{2028}", "\u{3000}", "\u{85}", "'", "'s", "'t", "'ll", "'ve", "'re",
        "'d", "'m", "'S", "s", "l", "v", "e", "word", "Z", "é", "Ж", "中文", "ß", "0", "42", "²", "٣", "Ⅻ", ".", ",", "!?", "-", "_",
        "😀", "\u{301}", "\u{200d}", "<|endoftext|>", "<|", "|>",
    ]);
    let piece = prop_oneof![4 => bits.prop_map(str::to_string), 1 => any::<char>().prop_map(String::from)];
    prop::collection::vec(piece, 0..32).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn pieces_are_the_patterns_matches(text in text()) {
        prop_assert_eq!(pretokenize::pieces(&text).collect::<Vec<_>>(), regex_pieces(&text));
    }

    #[test]
    fn tokens_are_tiktokens(text in text()) {
        let tokenizer = Tokenizer::gpt2();
        prop_assert_eq!(tokenizer.encode_ordinary(&text), reference().encode_ordinary(&text));
        prop_assert_eq!(tokenizer.encode(&text), reference().encode_with_special_tokens(&text));
    }
}

#[test]
fn every_code_point_is_classed_as_the_regex_does() {
    // A character between two letters: it joins their run exactly when it is a letter, and so on for
    // the other classes; the pattern's pieces show which class the regex gave it.
    let mut checked = 0;
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        for text in [format!("a{c}a"), format!("1{c}1"), format!("!{c}!"), format!("\t{c}\tx")] {
            let ours: Vec<&str> = pretokenize::pieces(&text).collect();
            if ours != regex_pieces(&text) {
                panic!("U+{:04X}: {ours:?} but the pattern gives {:?}", c as u32, regex_pieces(&text));
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 0x110000 - 0x800); // every scalar value
}

#[test]
fn long_pieces_encode_as_tiktoken() {
    // Pieces of 100 bytes and more take tiktoken's heap-based merge.
    let tokenizer = Tokenizer::gpt2();
    for text in ["=".repeat(250), format!(" {}", "abcdefghij".repeat(30)), "9".repeat(101), " ".repeat(120) + "x"] {
        assert_eq!(tokenizer.encode_ordinary(&text), reference().encode_ordinary(&text), "{text:?}");
    }
}
