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

/// The pieces of `text`, in order; together they are exactly `text`.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text, classes: CharClasses::get() }
}

pub struct Pieces<'a> {
    rest: &'a str,
    classes: &'static CharClasses,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (piece, rest) = self.rest.split_at(self.piece_len());
        self.rest = rest;
        Some(piece)
    }
}

impl Pieces<'_> {
    /// The length in bytes of the match at the start of the (non-empty) rest.
    fn piece_len(&self) -> usize {
        let s = self.rest;
        let bytes = s.as_bytes();
        // '(?:[sdmt]|ll|ve|re)
        if bytes[0] == b'\'' {
            match bytes.get(1..3) {
                Some(b"ll" | b"ve" | b"re") => return 3,
                _ => {}
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
            return run_start + self.run_len(&s[run_start..], run_class);
        }
        // Whitespace: `\s++$` takes a run that reaches the end; `\s+(?!\S)` a longer run but its
        // last character (which then starts the next piece, e.g. " word"); `\s` one character.
        let run = self.run_len(s, CharClass::Space);
        if run == s.len() {
            return run;
        }
        let last = s[..run].chars().next_back().map_or(0, char::len_utf8);
        if run > first.len_utf8() { run - last } else { run }
    }

    /// The length in bytes of the run of `class` characters at the start of `s`.
    fn run_len(&self, s: &str, class: CharClass) -> usize {
        s.char_indices().find(|&(_, c)| self.classes.of(c) != class).map_or(s.len(), |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<&str> {
        pieces(text).collect()
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
