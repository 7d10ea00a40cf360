//! The fast path for byte-level `tokenizer.json`s (`gpt::text::byte_level_bpe`) against
//! `tokenizers` itself, on the fixtures' Llama 3 and Qwen3 tokenizers: the same pieces as Llama
//! 3's split pattern (through fancy_regex, the engine `tokenizers` runs it on here) and the same
//! ids as `encode(text, false)`, on generated text dense in what the pattern decides and on the
//! fixtures' real text; texts holding an added token's text, and for Qwen3 texts its NFC
//! normalizer would change, are left to `tokenizers`.

use std::sync::OnceLock;

use fancy_regex::Regex;
use gpt::Tokenizer;
use gpt::text::byte_level_bpe::ByteLevelBpe;
use gpt::text::pretokenize::{LLAMA3_PATTERN, llama3_pieces};
use proptest::prelude::*;

use crate::common::family_fixture_dir;

fn tokenizer_json(model: &str) -> serde_json::Value {
    let path = family_fixture_dir(model).join("tokenizer.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The fixture tokenizers that take the fast path: Llama 3's and Qwen3's.
const MODELS: [&str; 2] = ["llama-tiny", "qwen3-tiny"];

fn fast(model: usize) -> &'static ByteLevelBpe {
    static FAST: OnceLock<Vec<ByteLevelBpe>> = OnceLock::new();
    &FAST.get_or_init(|| MODELS.iter().map(|m| ByteLevelBpe::from_json(&tokenizer_json(m)).unwrap_or_else(|| panic!("{m} takes the fast path"))).collect())[model]
}

fn reference(model: usize) -> &'static tokenizers::Tokenizer {
    static REFERENCE: OnceLock<Vec<tokenizers::Tokenizer>> = OnceLock::new();
    &REFERENCE.get_or_init(|| MODELS.iter().map(|m| tokenizers::Tokenizer::from_file(family_fixture_dir(m).join("tokenizer.json")).unwrap()).collect())[model]
}

fn reference_ids(model: usize, text: &str) -> Vec<u32> {
    reference(model).encode_fast(text, false).unwrap().get_ids().to_vec()
}

fn fast_ids(model: usize, text: &str) -> Option<Vec<u32>> {
    let mut ids = vec![7]; // what was there before stays
    let taken = fast(model).encode_ordinary_into(text, &mut ids);
    assert_eq!(ids[0], 7);
    taken.then(|| ids[1..].to_vec())
}

/// Bits of text the pattern's alternatives turn on, and any character at all.
fn text() -> impl Strategy<Value = String> {
    let bits = prop::sample::select(vec![
        " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\u{a0}", "\u{2028}", "\u{3000}", "\u{85}", "'", "'s", "'T", "'ll", "'LL", "'ve",
        "'Re", "'d", "'m", "ſ", "s", "l", "v", "e", "word", "Words", "Z", "é", "Ж", "中文", "ß", "0", "42", "12345", "²", "٣", "Ⅻ",
        ".", ",", "!?", "...", "-", "_", "(", "\"", "😀", "\u{301}", "\u{200d}", "<|", "|>", "<b>",
    ]);
    let piece = prop_oneof![4 => bits.prop_map(str::to_string), 1 => any::<char>().prop_map(String::from)];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn llama3_pieces_are_the_patterns_matches(text in text()) {
        static PATTERN: OnceLock<Regex> = OnceLock::new();
        let pattern = PATTERN.get_or_init(|| Regex::new(LLAMA3_PATTERN).unwrap());
        let expected: Vec<&str> = pattern.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
        prop_assert_eq!(llama3_pieces(&text, 3).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn ids_are_tokenizers(text in text()) {
        prop_assert_eq!(fast_ids(0, &text), Some(reference_ids(0, &text)));
        // Qwen3 normalizes to NFC first: a text that is NFC takes the fast path, others do not.
        let nfc = unicode_normalization_alignments::is_nfc(&text);
        prop_assert_eq!(fast_ids(1, &text), nfc.then(|| reference_ids(1, &text)));
    }
}

#[test]
fn real_text_encodes_as_tokenizers_does() {
    let data = family_fixture_dir("data");
    let mut tokens = 0;
    for name in ["perplexity_text.txt", "perplexity_docs.jsonl", "instruction_data_60.json", "hellaswag_val_40.jsonl", "sms_spam_300.tsv"] {
        let text = std::fs::read_to_string(data.join(name)).unwrap();
        for (model, tokenizer) in MODELS.iter().enumerate() {
            let expected = reference_ids(model, &text);
            assert_eq!(fast_ids(model, &text).as_ref(), Some(&expected), "{name} with {tokenizer}");
            tokens += expected.len();
        }
    }
    assert!(tokens > 30_000, "{tokens}");
    // Long runs: quadratic merging up to 2 KB a piece, `tokenizers` past that.
    for text in ["=".repeat(300), " ".repeat(500) + "x", "ab".repeat(1500), "9".repeat(100)] {
        for (model, name) in MODELS.iter().enumerate() {
            let expected = reference_ids(model, &text);
            if let Some(ids) = fast_ids(model, &text) {
                assert_eq!(ids, expected, "{text:?} with {name}");
            }
            assert_eq!(Tokenizer::from_model_dir(&family_fixture_dir(name)).unwrap().encode_ordinary(&text), expected);
        }
    }
}

#[test]
fn added_tokens_and_other_shapes_go_to_tokenizers() {
    // An added token's text is cut out by `tokenizers` before splitting: the fast path declines.
    for (model, text) in [(0, "<|begin_of_text|>Hello"), (0, "a <|eot_id|> b"), (1, "<|im_start|>user"), (1, "x <think> y")] {
        assert_eq!(fast_ids(model, text), None, "{text}");
        let tokenizer = Tokenizer::from_model_dir(&family_fixture_dir(MODELS[model])).unwrap();
        assert_eq!(tokenizer.encode_ordinary(text), reference_ids(model, text), "{text}");
    }
    // Qwen3's NFC: "é" as e + a combining accent is not NFC, so `tokenizers` composes it.
    let decomposed = "cafe\u{301} au lait";
    assert_eq!(fast_ids(1, decomposed), None);
    let qwen = Tokenizer::from_model_dir(&family_fixture_dir("qwen3-tiny")).unwrap();
    assert_eq!(qwen.encode_ordinary(decomposed), reference_ids(1, "caf\u{e9} au lait"));
    // A merge listed twice counts at its last place, in both (here the first 3,000 merges moved
    // last, after every other).
    let mut json = tokenizer_json("llama-tiny");
    let first_merges: Vec<serde_json::Value> = json["model"]["merges"].as_array().unwrap()[..3000].to_vec();
    json["model"]["merges"].as_array_mut().unwrap().extend(first_merges);
    json["model"]["ignore_merges"] = serde_json::Value::from(false);
    let fast = ByteLevelBpe::from_json(&json).unwrap();
    let reference: tokenizers::Tokenizer = json.to_string().parse().unwrap();
    let text = std::fs::read_to_string(family_fixture_dir("data").join("perplexity_text.txt")).unwrap();
    let text = text.as_str();
    let mut ids = Vec::new();
    assert!(fast.encode_ordinary_into(text, &mut ids));
    assert_eq!(ids, reference.encode_fast(text, false).unwrap().get_ids());
    assert_ne!(ids, reference_ids(0, text), "the moved merges change the ids");
    // A normalizer or a pattern of another kind.
    let mut json = tokenizer_json("qwen3-tiny");
    json["normalizer"] = serde_json::json!({"type": "NFKC"});
    assert!(ByteLevelBpe::from_json(&json).is_none());
    let mut json = tokenizer_json("llama-tiny");
    json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = serde_json::Value::from(r"\p{L}+|\s+");
    assert!(ByteLevelBpe::from_json(&json).is_none());
}
