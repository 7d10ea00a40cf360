//! The Porter stemmer as nltk implements it (`nltk.stem.porter.PorterStemmer()`, its default
//! NLTK_EXTENSIONS mode), which rouge-score's `use_stemmer=True` applies to tokens longer than 3
//! characters. Ported rule for rule from nltk 3.10's porter.py: the stemmer crates implement
//! Snowball's English (Porter2) or Martin Porter's own variant, which stem some words differently
//! (`dying`, `skies`, `generously`, `fully`…). Words are lowercase ASCII: rouge's tokens are `[a-z0-9]+`.

/// nltk's irregular forms, returned as they are before any rule runs.
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The stem of `word`. A word that is not ASCII is returned unchanged (rouge never passes one).
pub fn stem(word: &str) -> String {
    if !word.is_ascii() {
        return word.to_string();
    }
    let word = word.to_ascii_lowercase();
    if let Some((_, stem)) = IRREGULAR.iter().find(|(form, _)| *form == word) {
        return stem.to_string();
    }
    if word.len() <= 2 {
        return word;
    }
    let word = step1a(&word);
    let word = step1b(&word);
    let word = step1c(&word);
    let word = step2(&word);
    let word = step3(&word);
    let word = step4(&word);
    let word = step5a(&word);
    step5b(&word)
}

/// A rule: replace `suffix` by `replacement` when `condition` holds for what precedes it.
type Rule<'a> = (&'a str, &'a str, &'a dyn Fn(&str) -> bool);

/// The first rule whose suffix `word` ends with decides: applied if its condition holds, else the
/// word stays as it is (later rules are not tried).
fn apply_rules(word: &str, rules: &[Rule]) -> String {
    for (suffix, replacement, condition) in rules {
        if let Some(stem) = word.strip_suffix(suffix) {
            return if condition(stem) { format!("{stem}{replacement}") } else { word.to_string() };
        }
    }
    word.to_string()
}

/// Whether `word[i]` is a consonant: not a vowel, and a `y` only after a vowel (or at the start).
/// Walks back over a run of `y`s as nltk does (iteratively: a token may be a long `yyyy…`).
fn is_consonant(word: &[u8], mut i: usize) -> bool {
    let vowel = |c: u8| b"aeiou".contains(&c);
    if vowel(word[i]) {
        return false;
    }
    let mut negate = false;
    while i > 0 && word[i] == b'y' {
        negate = !negate;
        i -= 1;
    }
    // `y`s alternate: an even run after a consonant, or an odd one after a vowel, ends in a consonant.
    vowel(word[i]) == negate
}

/// [`is_consonant`] for every position in one pass: a `y` is a consonant iff the letter before is not.
fn consonant_flags(word: &str) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, c) in word.bytes().enumerate() {
        let consonant = match c {
            b'a' | b'e' | b'i' | b'o' | b'u' => false,
            b'y' => i == 0 || !flags[i - 1],
            _ => true,
        };
        flags.push(consonant);
    }
    flags
}

/// The paper's measure m of `[C](VC){m}[V]`: how many vowel → consonant changes `stem` has.
fn measure(stem: &str) -> usize {
    consonant_flags(stem).windows(2).filter(|pair| !pair[0] && pair[1]).count()
}

fn positive_measure(stem: &str) -> bool {
    measure(stem) > 0
}

fn contains_vowel(stem: &str) -> bool {
    consonant_flags(stem).contains(&false)
}

/// The paper's *d: the word ends with a double consonant.
fn ends_double_consonant(word: &str) -> bool {
    let w = word.as_bytes();
    w.len() >= 2 && w[w.len() - 1] == w[w.len() - 2] && is_consonant(w, w.len() - 1)
}

/// The paper's *o (consonant-vowel-consonant, the last not w, x or y), plus nltk's two-letter
/// vowel-consonant words.
fn ends_cvc(word: &str) -> bool {
    let w = word.as_bytes();
    let n = w.len();
    (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) && !b"wxy".contains(&w[n - 1]))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn step1a(word: &str) -> String {
    // nltk: a four-letter `-ies` word keeps its `ie` (ties → tie, not ti).
    if word.len() == 4 && word.ends_with("ies") {
        return format!("{}ie", &word[..1]);
    }
    let always = &|_: &str| true;
    apply_rules(word, &[("sses", "ss", always), ("ies", "i", always), ("ss", "ss", always), ("s", "", always)])
}

fn step1b(word: &str) -> String {
    // nltk: `-ied` → `ie` in four-letter words, else `i` (died → die, cried → cri).
    if let Some(stem) = word.strip_suffix("ied") {
        return if word.len() == 4 { format!("{stem}ie") } else { format!("{stem}i") };
    }
    if let Some(stem) = word.strip_suffix("eed") {
        return if measure(stem) > 0 { format!("{stem}ee") } else { word.to_string() };
    }
    let Some(stem) = ["ed", "ing"].iter().find_map(|suffix| word.strip_suffix(suffix).filter(|stem| contains_vowel(stem))) else {
        return word.to_string();
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if let Some(base) = stem.strip_suffix(suffix) {
            return format!("{base}{replacement}");
        }
    }
    if ends_double_consonant(stem) {
        let last = stem.as_bytes()[stem.len() - 1];
        // hopp(ing) → hop, but fall(ing), hiss(ing), fizz(ed) keep both letters.
        return if b"lsz".contains(&last) { stem.to_string() } else { stem[..stem.len() - 1].to_string() };
    }
    if measure(stem) == 1 && ends_cvc(stem) { format!("{stem}e") } else { stem.to_string() }
}

fn step1c(word: &str) -> String {
    // nltk: y → i only after a consonant that is not the whole stem (happy → happi, enjoy, sky stay).
    let after_consonant = &|stem: &str| stem.len() > 1 && is_consonant(stem.as_bytes(), stem.len() - 1);
    apply_rules(word, &[("y", "i", after_consonant)])
}

fn step2(word: &str) -> String {
    // nltk: `-alli` → `-al`, then step 2 again (radicalli → radical).
    if let Some(stem) = word.strip_suffix("alli").filter(|stem| positive_measure(stem)) {
        return step2(&format!("{stem}al"));
    }
    let m = &positive_measure;
    // nltk's `-logi` rule counts the `l` in the stem: m(word minus `ogi`) > 0.
    let logi = &|stem: &str| positive_measure(&word[..stem.len() + 1]);
    apply_rules(
        word,
        &[
            ("ational", "ate", m),
            ("tional", "tion", m),
            ("enci", "ence", m),
            ("anci", "ance", m),
            ("izer", "ize", m),
            ("bli", "ble", m),
            ("alli", "al", m),
            ("entli", "ent", m),
            ("eli", "e", m),
            ("ousli", "ous", m),
            ("ization", "ize", m),
            ("ation", "ate", m),
            ("ator", "ate", m),
            ("alism", "al", m),
            ("iveness", "ive", m),
            ("fulness", "ful", m),
            ("ousness", "ous", m),
            ("aliti", "al", m),
            ("iviti", "ive", m),
            ("biliti", "ble", m),
            ("fulli", "ful", m),
            ("logi", "log", logi),
        ],
    )
}

fn step3(word: &str) -> String {
    let m = &positive_measure;
    apply_rules(
        word,
        &[("icate", "ic", m), ("ative", "", m), ("alize", "al", m), ("iciti", "ic", m), ("ical", "ic", m), ("ful", "", m), ("ness", "", m)],
    )
}

fn step4(word: &str) -> String {
    let m: &dyn Fn(&str) -> bool = &|stem: &str| measure(stem) > 1;
    let ion: &dyn Fn(&str) -> bool = &|stem: &str| measure(stem) > 1 && (stem.ends_with('s') || stem.ends_with('t'));
    let rules: Vec<Rule> = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize"]
        .into_iter()
        .map(|suffix| -> Rule { (suffix, "", if suffix == "ion" { ion } else { m }) })
        .collect();
    apply_rules(word, &rules)
}

fn step5a(word: &str) -> String {
    if let Some(stem) = word.strip_suffix('e') {
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_string();
        }
    }
    word.to_string()
}

fn step5b(word: &str) -> String {
    // controll → control when m(word minus its last l) > 1; roll stays.
    if word.ends_with("ll") && measure(&word[..word.len() - 1]) > 1 {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::text_metrics::report::tests::reference_fixture;

    #[test]
    fn stems_equal_nltk_on_every_fixture_word() {
        let fixture = reference_fixture();
        let stems = fixture["stems"].as_object().expect("stems");
        assert!(stems.len() > 250, "{} words", stems.len());
        let wrong: Vec<String> = stems
            .iter()
            .filter(|(word, expected)| stem(word) != expected.as_str().expect("a string"))
            .map(|(word, expected)| format!("{word}: {} (nltk {expected})", stem(word)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_paper_examples() {
        for (word, expected) in [("caresses", "caress"), ("ponies", "poni"), ("hopping", "hop"), ("filing", "file"), ("relational", "relat"), ("dying", "die")] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
