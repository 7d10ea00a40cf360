//! A fast path for the `tokenizer.json`s of Llama 3, Qwen2 and Qwen3 (byte-level BPE over the
//! cl100k-style split pattern; Qwen's NFC normalizer where the text is NFC already):
//! `encode_ordinary` with [`super::pretokenize`]'s
//! one-pass scanner for the pattern and a pair-rank BPE, the same ids as `tokenizers`
//! (tested on the fixture's tokenizer), several times faster. It takes only the shapes it
//! reproduces exactly; any other `tokenizer.json`, and any text holding an added token's
//! text, goes to `tokenizers` as before.

use aho_corasick::AhoCorasick;
use rustc_hash::FxHashMap;
use serde_json::Value;

use super::pretokenize::{LLAMA3_PATTERN, QWEN2_PATTERN, llama3_pieces};

/// A piece this long goes to `tokenizers`' heap instead of this quadratic merge loop.
const LONG_PIECE: usize = 2048;

pub struct ByteLevelBpe {
    /// Each byte's own token.
    byte_ids: [u32; 256],
    /// A token's bytes → its id, for `ignore_merges` (a piece that is a token is that token).
    vocab: FxHashMap<Vec<u8>, u32>,
    /// Two adjacent tokens → the rank of their merge and the token it makes.
    merges: FxHashMap<(u32, u32), (u32, u32)>,
    ignore_merges: bool,
    /// 3 for Llama 3's pattern, 1 for Qwen2's.
    max_digits: usize,
    /// An NFC normalizer (Qwen's): only texts that are NFC already take this path.
    nfc: bool,
    /// The added tokens' texts, which `tokenizers` cuts out before splitting.
    added: AhoCorasick,
}

impl ByteLevelBpe {
    /// The fast path for this `tokenizer.json`, where it has a shape this reproduces exactly: no
    /// normalizer but NFC, no truncation or padding; the split pattern of Llama 3 or Qwen2,
    /// isolated, then ByteLevel without its own regex; a BPE without dropout, unknown token,
    /// affixes or byte fallback, whose vocabulary is byte-level throughout; added tokens without
    /// strip options. None for any other.
    pub fn from_json(json: &Value) -> Option<Self> {
        let null = |key: &str| json.get(key).is_none_or(Value::is_null);
        if !null("truncation") || !null("padding") {
            return None;
        }
        let nfc = match json.get("normalizer") {
            None | Some(Value::Null) => false,
            Some(normalizer) if normalizer.get("type").and_then(Value::as_str) == Some("NFC") => true,
            Some(_) => return None,
        };
        let max_digits = split_pattern_digits(json.get("pre_tokenizer")?)?;
        let model = json.get("model")?;
        let field = |key: &str| model.get(key).unwrap_or(&Value::Null);
        let plain = model.get("type")?.as_str()? == "BPE"
            && field("dropout").is_null()
            && field("unk_token").is_null()
            && none_or_empty(field("continuing_subword_prefix"))
            && none_or_empty(field("end_of_word_suffix"))
            && !field("byte_fallback").as_bool().unwrap_or(false);
        if !plain {
            return None;
        }
        let ignore_merges = field("ignore_merges").as_bool().unwrap_or(false);
        let byte_of = byte_level_decoder();
        let mut vocab = FxHashMap::default();
        let mut id_of_text = FxHashMap::default();
        for (text, id) in model.get("vocab")?.as_object()? {
            let id = u32::try_from(id.as_u64()?).ok()?;
            let bytes = text.chars().map(|c| byte_of.get(&c).copied()).collect::<Option<Vec<u8>>>()?;
            vocab.insert(bytes, id);
            id_of_text.insert(text.as_str(), id);
        }
        let mut byte_ids = [0u32; 256];
        for (byte, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *vocab.get(&vec![byte as u8])?;
        }
        let mut merges = FxHashMap::default();
        for (rank, merge) in model.get("merges")?.as_array()?.iter().enumerate() {
            // "left right" (older files) or ["left", "right"].
            let (left, right) = match merge {
                Value::String(pair) => pair.split_once(' ')?,
                Value::Array(pair) if pair.len() == 2 => (pair[0].as_str()?, pair[1].as_str()?),
                _ => return None,
            };
            let merged = *id_of_text.get(format!("{left}{right}").as_str())?;
            let pair = (*id_of_text.get(left)?, *id_of_text.get(right)?);
            // A pair listed twice takes its last rank, as `tokenizers`' map collects them.
            merges.insert(pair, (u32::try_from(rank).ok()?, merged));
        }
        let mut added = Vec::new();
        for token in json.get("added_tokens")?.as_array()? {
            let flag = |key: &str| token.get(key).and_then(Value::as_bool).unwrap_or(false);
            if flag("single_word") || flag("lstrip") || flag("rstrip") {
                return None;
            }
            added.push(token.get("content")?.as_str()?.to_string());
        }
        let added = AhoCorasick::new(&added).ok()?;
        Some(Self { byte_ids, vocab, merges, ignore_merges, max_digits, nfc, added })
    }

    /// Appends `text`'s ids without special tokens, as `tokenizers`' `encode(text, false)`; false
    /// (and `ids` as it was) where `tokenizers` has to: the text holds an added token's text, or
    /// a piece too long for this loop, or the normalizer would change it.
    pub fn encode_ordinary_into(&self, text: &str, ids: &mut Vec<u32>) -> bool {
        if self.added.is_match(text) || (self.nfc && !unicode_normalization_alignments::is_nfc(text)) {
            return false;
        }
        let start = ids.len();
        let mut parts = Vec::new();
        for piece in llama3_pieces(text, self.max_digits) {
            let bytes = piece.as_bytes();
            if self.ignore_merges
                && let Some(&id) = self.vocab.get(bytes)
            {
                ids.push(id);
                continue;
            }
            if bytes.len() >= LONG_PIECE {
                ids.truncate(start);
                return false;
            }
            self.merge(bytes, &mut parts);
            ids.extend_from_slice(&parts);
        }
        true
    }

    /// BPE on one piece: from its bytes' tokens, merge the adjacent pair of lowest rank (the
    /// leftmost of equals) until no pair merges, which is the order of `tokenizers`' heap.
    fn merge(&self, bytes: &[u8], parts: &mut Vec<u32>) {
        parts.clear();
        parts.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
        let rank_at = |parts: &[u32], i: usize| self.merges.get(&(parts[i], parts[i + 1])).copied();
        // ranks[i]: the merge of parts[i] and parts[i + 1], if any.
        let mut ranks: Vec<Option<(u32, u32)>> = (0..parts.len().saturating_sub(1)).map(|i| rank_at(parts, i)).collect();
        loop {
            let best = ranks.iter().enumerate().filter_map(|(i, r)| r.map(|(rank, id)| (rank, i, id))).min_by_key(|&(rank, i, _)| (rank, i));
            let Some((_, i, id)) = best else { break };
            parts[i] = id;
            parts.remove(i + 1);
            ranks.remove(i);
            if i < ranks.len() {
                ranks[i] = rank_at(parts, i);
            }
            if i > 0 {
                ranks[i - 1] = rank_at(parts, i - 1);
            }
        }
    }
}

/// A prefix or suffix `tokenizers` would add: none, or the empty string (Qwen's files).
fn none_or_empty(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some("")
}

/// 3 or 1 (the longest run of digits a piece takes) where `pre_tokenizer` is Llama 3's or
/// Qwen2's: their split pattern, isolated, then ByteLevel without its own regex or prefix space.
fn split_pattern_digits(pre_tokenizer: &Value) -> Option<usize> {
    let steps = pre_tokenizer.get("pretokenizers")?.as_array()?;
    let [split, byte_level] = steps.as_slice() else { return None };
    let is = |v: &Value, key: &str, want: &str| v.get(key).and_then(Value::as_str) == Some(want);
    let flag = |v: &Value, key: &str| v.get(key).and_then(Value::as_bool);
    let pattern = split.get("pattern")?.get("Regex")?.as_str()?;
    let digits = match pattern {
        LLAMA3_PATTERN => 3,
        QWEN2_PATTERN => 1,
        _ => return None,
    };
    let split_ok = is(split, "type", "Split") && is(split, "behavior", "Isolated") && flag(split, "invert") == Some(false);
    let byte_level_ok =
        is(byte_level, "type", "ByteLevel") && flag(byte_level, "use_regex") == Some(false) && flag(byte_level, "add_prefix_space") == Some(false);
    (is(pre_tokenizer, "type", "Sequence") && split_ok && byte_level_ok).then_some(digits)
}

/// GPT-2's byte-level alphabet read backwards: the printable character that stands for each byte
/// in a byte-level vocabulary (bytes that print as themselves, the others from U+0100 on).
fn byte_level_decoder() -> FxHashMap<char, u8> {
    let prints = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if prints(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(255 + next).unwrap_or('\u{0}')
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_alphabet_is_gpt2s() {
        let decoder = byte_level_decoder();
        assert_eq!(decoder.len(), 256);
        assert_eq!(decoder[&'Ġ'], b' ');
        assert_eq!(decoder[&'Ċ'], b'\n');
        assert_eq!(decoder[&'a'], b'a');
        assert_eq!(decoder[&'\u{100}'], 0);
        assert_eq!(decoder[&'\u{143}'], 0xAD);
    }
}
