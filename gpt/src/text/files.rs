//! The GPT-2 tokenizer in Hugging Face's file format (`vocab.json`, `merges.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json`), made offline from the BPE compiled into the
//! binary, so that an exported model directory loads in `transformers` with its tokenizer.
//!
//! HF's GPT-2 files spell each token's bytes with printable characters (`bytes_to_unicode`: a
//! space is `Ġ`), and list the merges in rank order: merge `i` makes token `256 + i`. tiktoken only
//! keeps the ranks, so each merge is recovered by running the BPE on the token's bytes with the
//! merges ranked below it: what is left are the two parts that the token's own merge joins.

use std::collections::HashMap;
use std::path::Path;

use crate::models::gpt2::EOT_TOKEN;
use crate::error::{GptError, Result};
use crate::io::write_atomic;
use super::tokenizer::Tokenizer;

/// The text of `<|endoftext|>`, GPT-2's only special token.
pub const EOT_TEXT: &str = "<|endoftext|>";

/// GPT-2's byte → character table (`bytes_to_unicode` in OpenAI's `encoder.py`): printable bytes
/// stand for themselves, the others get the characters from U+0100 on, in byte order.
pub fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// The vocabulary and merges of the GPT-2 BPE, as HF spells them.
pub struct HfTokenizerFiles {
    /// Token strings by id (50,257, the last one `<|endoftext|>`).
    pub vocab: Vec<String>,
    /// The 50,000 merges in rank order, each as its two parts.
    pub merges: Vec<(String, String)>,
}

impl HfTokenizerFiles {
    pub fn gpt2() -> Result<Self> {
        let tokenizer = Tokenizer::gpt2();
        let table = bytes_to_unicode();
        let spell = |bytes: &[u8]| bytes.iter().map(|&b| table[b as usize]).collect::<String>();
        let tokens: Vec<Vec<u8>> = (0..EOT_TOKEN).map(|id| tokenizer.decode_bytes(&[id])).collect::<Result<_>>()?;
        let ranks: HashMap<&[u8], u32> = tokens.iter().enumerate().map(|(id, bytes)| (bytes.as_slice(), id as u32)).collect();
        let mut merges = Vec::with_capacity(tokens.len() - 256);
        for (id, bytes) in tokens.iter().enumerate().skip(256) {
            let parts = bpe_below(bytes, &ranks, id as u32);
            if parts.len() != 2 {
                return Err(GptError::Tokenizer(format!("token {id} ({:?}) is not one merge of lower-ranked tokens", spell(bytes))));
            }
            merges.push((spell(parts[0]), spell(parts[1])));
        }
        let mut vocab: Vec<String> = tokens.iter().map(|bytes| spell(bytes)).collect();
        vocab.push(EOT_TEXT.to_string());
        Ok(Self { vocab, merges })
    }

    /// `vocab.json`: `{"token": id, ...}` in id order.
    pub fn vocab_json(&self) -> String {
        let entries: Vec<String> = self
            .vocab
            .iter()
            .enumerate()
            .map(|(id, token)| format!("{}: {id}", serde_json::Value::String(token.clone())))
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    /// `merges.txt`: the version line, then one `left right` line per merge.
    pub fn merges_txt(&self) -> String {
        let mut text = String::from("#version: 0.2\n");
        for (left, right) in &self.merges {
            text.push_str(left);
            text.push(' ');
            text.push_str(right);
            text.push('\n');
        }
        text
    }

    /// Writes the four tokenizer files into `dir` (each atomically).
    pub fn write(&self, dir: &Path, model_max_length: usize) -> Result<()> {
        let special = serde_json::json!({ "bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT });
        let mut config = special.clone();
        config["model_max_length"] = model_max_length.into();
        config["tokenizer_class"] = "GPT2Tokenizer".into();
        config["add_prefix_space"] = false.into();
        config["clean_up_tokenization_spaces"] = false.into();
        write_atomic(&dir.join("vocab.json"), self.vocab_json().as_bytes())?;
        write_atomic(&dir.join("merges.txt"), self.merges_txt().as_bytes())?;
        write_atomic(&dir.join("tokenizer_config.json"), pretty(&config).as_bytes())?;
        write_atomic(&dir.join("special_tokens_map.json"), pretty(&special).as_bytes())
    }
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Byte-pair merging of `bytes` with only the tokens ranked below `limit`: always the adjacent pair
/// whose join has the lowest rank, until none is below `limit`.
fn bpe_below<'a>(bytes: &'a [u8], ranks: &HashMap<&[u8], u32>, limit: u32) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = (0..bytes.len()).map(|i| &bytes[i..i + 1]).collect();
    let mut starts: Vec<usize> = (0..bytes.len()).collect();
    loop {
        let best = (0..parts.len().saturating_sub(1))
            .filter_map(|i| {
                let joined = &bytes[starts[i]..starts[i] + parts[i].len() + parts[i + 1].len()];
                ranks.get(joined).filter(|&&rank| rank < limit).map(|&rank| (rank, i))
            })
            .min();
        let Some((_, i)) = best else { return parts };
        let start = starts[i];
        parts[i] = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
        parts.remove(i + 1);
        starts.remove(i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_spelled_as_gpt2_spells_them() {
        let table = bytes_to_unicode();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[0], 'Ā');
        let mut sorted = table.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "one character per byte");
    }

    /// The start of OpenAI's `vocab.bpe` (= HF's merges.txt for gpt2), and its shape: 50,000
    /// merges, merge `i` joining into token `256 + i`.
    #[test]
    fn the_merges_are_gpt2s() {
        let files = HfTokenizerFiles::gpt2().unwrap();
        assert_eq!(files.vocab.len(), 50_257);
        assert_eq!(files.merges.len(), 50_000);
        let first: Vec<String> = files.merges_txt().lines().take(11).map(str::to_string).collect();
        assert_eq!(first, ["#version: 0.2", "Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t"]);
        for (i, (left, right)) in files.merges.iter().enumerate() {
            assert_eq!(format!("{left}{right}"), files.vocab[256 + i], "merge {i}");
        }
        assert_eq!(files.vocab[464], "The");
        assert_eq!(files.vocab[50256], "<|endoftext|>");
        let vocab: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&files.vocab_json()).unwrap();
        assert_eq!(vocab.len(), 50_257);
        assert_eq!(vocab["Ġthe"], 262);
    }
}
