//! GPT-2's pre-tokeniser, the pattern that cuts text into the pieces BPE merges within, written out
//! as a one-pass scanner.
//!
//! tiktoken's pattern for `gpt2` / `r50k_base` (OpenAI's original, with possessive quantifiers) is
//!
//! ```text
//! '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
//! ```
//!
//! Its look-ahead needs a backtracking engine (fancy_regex), which was about half of the time of
//! `prepare fineweb`, and fancy_regex's scratch pool, shared between threads, made two tokeniser
//! threads barely faster than one. [`Pieces`] takes the same decisions in one forward pass: the
//! alternatives are tried in the pattern's order at each position, as the regex does. The character
//! classes `\p{L}`, `\p{N}` and `\s` are read from regex-syntax, the tables of the regex itself, so
//! they match it code point for code point (tests compare the two on generated and real text).
//!
//! [`llama3_pieces`] does the same for the split pattern of Llama 3's `tokenizer.json` (and
//! Qwen2's, one digit a piece), for [`super::byte_level_bpe`].

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// The class of a character, as far as the pattern cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Letter,
    Number,
    Space,
    Other,
}

/// `\p{L}`, `\p{N}` and `\s` as one lookup: a table for ASCII, sorted ranges for the rest.
struct CharClasses {
    ascii: [CharClass; 128],
    ranges: Vec<(u32, u32, CharClass)>,
}

impl CharClasses {
    fn get() -> &'static Self {
        static CLASSES: OnceLock<CharClasses> = OnceLock::new();
        CLASSES.get_or_init(Self::build)
    }

    fn build() -> Self {
        let mut ranges = Vec::new();
        for (pattern, class) in [(r"\p{L}", CharClass::Letter), (r"\p{N}", CharClass::Number), (r"\s", CharClass::Space)] {
            // Compiled-in patterns: parsing them cannot fail at run time.
            let hir = regex_syntax::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            let HirKind::Class(Class::Unicode(set)) = hir.kind() else { panic!("{pattern} is not a Unicode class") };
            ranges.extend(set.ranges().iter().map(|r| (r.start() as u32, r.end() as u32, class)));
        }
        // The three classes are disjoint, so sorting by start gives non-overlapping ranges.
        ranges.sort_unstable_by_key(|r| r.0);
        let mut ascii = [CharClass::Other; 128];
        for (c, slot) in ascii.iter_mut().enumerate() {
            *slot = Self::search(&ranges, c as u32);
        }
        Self { ascii, ranges }
    }

    fn search(ranges: &[(u32, u32, CharClass)], c: u32) -> CharClass {
        let i = ranges.partition_point(|r| r.0 <= c);
        match i.checked_sub(1).map(|i| ranges[i]) {
            Some((_, end, class)) if c <= end => class,
            _ => CharClass::Other,
        }
    }

    #[inline]
    fn of(&self, c: char) -> CharClass {
        match self.ascii.get(c as usize) {
            Some(&class) => class,
            None => Self::search(&self.ranges, c as u32),
        }
    }
}

/// The pieces of `text` under GPT-2's pattern, in order; together they are exactly `text`.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text, classes: CharClasses::get(), pattern: Pattern::Gpt2 }
}

/// Which split pattern [`Pieces`] follows.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    Gpt2,
    /// [`LLAMA3_PATTERN`] (3 digits a piece at most) or [`QWEN2_PATTERN`] (1).
    Llama3 { max_digits: usize },
}

pub struct Pieces<'a> {
    rest: &'a str,
    classes: &'static CharClasses,
    pattern: Pattern,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match self.pattern {
            Pattern::Gpt2 => self.gpt2_len(),
            Pattern::Llama3 { max_digits } => self.llama3_len(max_digits),
        };
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

impl Pieces<'_> {
    /// The length in bytes of GPT-2's match at the start of the (non-empty) rest.
    fn gpt2_len(&self) -> usize {
        let s = self.rest;
        let bytes = s.as_bytes();
        // '(?:[sdmt]|ll|ve|re)
        if bytes[0] == b'\'' {
            if let Some(b"ll" | b"ve" | b"re") = bytes.get(1..3) {
                return 3;
            }
            if matches!(bytes.get(1), Some(b's' | b'd' | b'm' | b't')) {
                return 2;
            }
        }
        let mut chars = s.chars();
        let first = chars.next().unwrap_or(' ');
        let class = self.classes.of(first);
        // ` ?X++` for the three runs: an optional space, then a maximal run of one class.
        let (run_start, run_class) = match (first, class) {
            (' ', _) => match chars.next().map(|c| self.classes.of(c)) {
                Some(next) if next != CharClass::Space => (1, next),
                _ => (0, CharClass::Space),
            },
            _ => (0, class),
        };
        if run_class != CharClass::Space {
            return run_start + self.run_len(&s[run_start..], |c| c == run_class);
        }
        // Whitespace: `\s++$` takes a run that reaches the end; `\s+(?!\S)` a longer run but its
        // last character (which then starts the next piece, e.g. " word"); `\s` one character.
        let run = self.run_len(s, |c| c == CharClass::Space);
        space_piece_len(s, run)
    }
}

/// The piece a run of `run` bytes of whitespace at the start of `s` makes, as both patterns end:
/// the run, if it ends the text; else the run but its last character (which then starts the next
/// piece, e.g. " word"), if that leaves one; else the one character.
fn space_piece_len(s: &str, run: usize) -> usize {
    if run == s.len() {
        return run;
    }
    let last = s[..run].chars().next_back().map_or(0, char::len_utf8);
    if run > last { run - last } else { run }
}

/// The split pattern of Llama 3's `tokenizer.json` (tiktoken's `cl100k_base` with letters cased
/// alike), with `\p{N}{1,3}`; Qwen2's is the same with `\p{N}` (one digit a piece).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pieces of `text` under [`LLAMA3_PATTERN`] (`max_digits` 3) or [`QWEN2_PATTERN`]
/// (`max_digits` 1), in one forward pass as for GPT-2's.
pub fn llama3_pieces(text: &str, max_digits: usize) -> Pieces<'_> {
    Pieces { rest: text, classes: CharClasses::get(), pattern: Pattern::Llama3 { max_digits } }
}

impl Pieces<'_> {
    /// The length in bytes of Llama 3's match at the start of the (non-empty) rest: the
    /// pattern's alternatives in its order.
    fn llama3_len(&self, max_digits: usize) -> usize {
        let s = self.rest;
        let mut chars = s.chars();
        let first = chars.next().unwrap_or(' ');
        let second = chars.next();
        // (?i:'s|'t|'re|'ve|'m|'ll|'d): cased alike by Unicode's simple folding, where `ſ` is an s.
        if first == '\'' && let Some(c1) = second {
            let fold = |c: char| if c == 'ſ' { 's' } else { c.to_ascii_lowercase() };
            let c2 = chars.next().map(fold);
            match (fold(c1), c2) {
                ('s' | 't' | 'm' | 'd', _) => return 1 + c1.len_utf8(),
                ('r', Some('e')) | ('v', Some('e')) | ('l', Some('l')) => return 3,
                _ => {}
            }
        }
        let class = self.classes.of(first);
        let second_class = second.map(|c| self.classes.of(c));
        let newline = |c: char| c == '\r' || c == '\n';
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if class == CharClass::Letter {
            return self.run_len(s, |c| c == CharClass::Letter);
        }
        if class != CharClass::Number && !newline(first) && second_class == Some(CharClass::Letter) {
            let at = first.len_utf8();
            return at + self.run_len(&s[at..], |c| c == CharClass::Letter);
        }
        // \p{N}{1,max}
        if class == CharClass::Number {
            let digits = s.char_indices().take_while(|&(_, c)| self.classes.of(c) == CharClass::Number).take(max_digits);
            return digits.last().map_or(0, |(i, c)| i + c.len_utf8());
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        let other_at = if class == CharClass::Other {
            Some(0)
        } else if first == ' ' && second_class == Some(CharClass::Other) {
            Some(1)
        } else {
            None
        };
        if let Some(at) = other_at {
            let end = at + self.run_len(&s[at..], |c| c == CharClass::Other);
            return end + s[end..].bytes().take_while(|&b| b == b'\r' || b == b'\n').count();
        }
        // Whitespace from here on (the classes leave nothing else).
        let run = self.run_len(s, |c| c == CharClass::Space);
        // \s*[\r\n]+: up to the run's last newline.
        if let Some(last_newline) = s[..run].rfind(['\r', '\n']) {
            return last_newline + 1;
        }
        // \s+(?!\S), then \s+.
        space_piece_len(s, run)
    }

    /// The length in bytes of the run of characters whose class passes `keep` at the start of `s`.
    fn run_len(&self, s: &str, keep: impl Fn(CharClass) -> bool) -> usize {
        s.char_indices().find(|&(_, c)| !keep(self.classes.of(c))).map_or(s.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        pieces(text).collect()
    }

    fn llama3_split(text: &str) -> Vec<&str> {
        llama3_pieces(text, 3).collect()
    }

    /// The pattern's own matches (fancy_regex, the engine `tokenizers` runs it on here).
    fn regex_split<'a>(pattern: &str, text: &'a str) -> Vec<&'a str> {
        let regex = fancy_regex::Regex::new(pattern).unwrap();
        regex.find_iter(text).map(|m| m.unwrap().as_str()).collect()
    }

    #[test]
    fn splits_like_llama3() {
        assert_eq!(llama3_split("Hello world"), ["Hello", " world"]);
        assert_eq!(llama3_split("I'LL don'T we've"), ["I", "'LL", " don", "'T", " we", "'ve"]);
        assert_eq!(llama3_split("12345 x"), ["123", "45", " x"]);
        assert_eq!(llama3_split("a  b\n\n  c\t\td  "), ["a", " ", " b", "\n\n", " ", " c", "\t", "\td", "  "]);
        assert_eq!(llama3_split("(hi)...\n\nok"), ["(hi", ")...\n\n", "ok"]);
        assert_eq!(llama3_split("x \r\n y"), ["x", " \r\n", " y"]);
        assert_eq!(llama3_pieces("2024", 1).collect::<Vec<_>>(), ["2", "0", "2", "4"]);
    }

    /// The scanner against the pattern itself, on text built from the characters each
    /// alternative turns on (letters of several scripts, digits, `'`, `ſ`, spaces of several
    /// kinds, newlines, punctuation, an emoji, a combining mark).
    #[test]
    fn llama3_pieces_are_the_patterns_matches() {
        let alphabet: Vec<char> = "aZé Ж中'sStTrReEvVlLmMdDſ0١²Ⅻ \t\r\n\u{a0}\u{2028}.,!?-_(\"🙂\u{301}".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (pattern, digits) in [(LLAMA3_PATTERN, 3), (QWEN2_PATTERN, 1)] {
            let regex = fancy_regex::Regex::new(pattern).unwrap();
            for _ in 0..3000 {
                let len = (next() % 24) as usize;
                let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
                let expected: Vec<&str> = regex.find_iter(&text).map(|m| m.unwrap().as_str()).collect();
                let got: Vec<&str> = llama3_pieces(&text, digits).collect();
                assert_eq!(got, expected, "{pattern} on {text:?}");
            }
        }
        let text = "The café's owner said: \"We'll open at 9:30!\"\n\n\tMenu — 12,500 ₽\r\n  • soup\u{a0}\u{a0}x   \n";
        assert_eq!(llama3_split(text), regex_split(LLAMA3_PATTERN, text));
    }

    #[test]
    fn splits_like_gpt2() {
        assert_eq!(split("Hello world"), ["Hello", " world"]);
        assert_eq!(split("I'll don't we've"), ["I", "'ll", " don", "'t", " we", "'ve"]);
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a \n\n b  "), ["a", " \n\n", " b", "  "]);
        assert_eq!(split("x\ty"), ["x", "\t", "y"]);
        assert_eq!(split("3.14, 2024!"), ["3", ".", "14", ",", " 2024", "!"]);
        assert_eq!(split("?'s '"), ["?'", "s", " '"]);
        assert_eq!(split("café ²x"), ["café", " ²", "x"]);
        assert_eq!(split("e\u{301}"), ["e", "\u{301}"]); // a combining mark is not a letter
        assert_eq!(split(" "), [" "]);
        assert!(split("").is_empty());
    }

    #[test]
    fn classes_match_the_regex_tables() {
        let classes = CharClasses::get();
        assert_eq!(classes.of('a'), CharClass::Letter);
        assert_eq!(classes.of('Ж'), CharClass::Letter);
        assert_eq!(classes.of('٣'), CharClass::Number);
        assert_eq!(classes.of('Ⅻ'), CharClass::Number);
        assert_eq!(classes.of('\u{a0}'), CharClass::Space);
        assert_eq!(classes.of('\u{2028}'), CharClass::Space);
        assert_eq!(classes.of('\u{85}'), CharClass::Space);
        assert_eq!(classes.of('🙂'), CharClass::Other);
        assert_eq!(classes.of('_'), CharClass::Other);
    }
}
