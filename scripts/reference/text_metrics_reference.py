#!/usr/bin/env python3
"""Reference values for `llmfs eval text`: ROUGE-1/2/L/Lsum F1 from Google's `rouge-score`
(`RougeScorer([...], use_stemmer=False/True)`), BLEU and chrF from `sacrebleu` with its defaults
(corpus: `BLEU().corpus_score`, `CHRF().corpus_score`; per pair: `sentence_bleu` (effective
order, as sacrebleu recommends for one sentence) and `CHRF().sentence_score`), the 13a tokenizer's
output, nltk's Porter stemmer (the NLTK_EXTENSIONS mode rouge-score uses) on a word list, and the
code points Python's `str.split()` treats as white space. The fixture
`tests/fixtures/text_metrics_reference.json` is this script's output:

    ~/.cache/llmfs-torch-venv/bin/pip install rouge-score sacrebleu
    ~/.cache/llmfs-torch-venv/bin/python scripts/reference/text_metrics_reference.py > tests/fixtures/text_metrics_reference.json
"""

import json
import pathlib
import platform
import sys
from importlib.metadata import version

import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, tokenize
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
ROOT = pathlib.Path(__file__).resolve().parents[2]

# (reference, hypothesis): the edge cases first, then Alpaca-style answers.
PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat sat on the mat.", "The cat is on the mat."),
    ("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
    ("", ""),
    ("A reference with words.", ""),
    ("", "A response without a reference."),
    ("...", "!!!"),
    ("?!", "?!"),
    ("--- *** ---", "Hello."),
    ("Hello, world!", "hello world"),
    ("the the the the the", "the the the"),
    ("the cat the cat the cat", "the cat the dog the cat the cat"),
    ("a b a b a b a b", "b a b a b a"),
    ("It's 3.14, not 3,14 - or is it 1-2?", "It is 3.14 not 3, 14 or is it 1 - 2 ?"),
    ("Price: $5.00 (approx.) & tax <10%>", "Price $5 approx &amp; tax &lt;10%&gt;"),
    ("Café déjà vu — naïve façade", "Cafe deja vu - naive facade"),
    ("Ünïcödé wörds: Straße, İstanbul, ΚΑΛΗΜΈΡΑ", "unicode words strasse istanbul καλημέρα"),
    ("日本語のテキストです。", "日本語のテキストですか？"),
    ("Emoji 😀 test 🎉🎉", "emoji test 🎉"),
    ("The Kelvin sign K is a letter", "the kelvin sign k is a letter"),
    ("First sentence here.\nSecond sentence there.\nThird one.", "First sentence there.\nSecond here.\nA third one."),
    ("Line one\n\nLine two after a blank", "Line two after a blank\nLine one"),
    ("one two three\nfour five six", "one two three four five six"),
    ("alpha beta gamma delta", "alpha beta\ngamma delta\nalpha"),
    ("a b c d e f\ng h i j", "a c e\ng i\nb d f h j"),
    ("punctuation only\n...\nwords again", "!!!\nwords again\npunctuation only"),
    ("  leading and trailing spaces  ", "leading and trailing spaces"),
    ("tabs\tand\tnewlines\nmixed", "tabs and newlines mixed"),
    ("non\u00a0breaking\u2003spaces\u3000here", "non breaking spaces here"),
    ("hyphen-\nated word", "hyphenated word"),
    ("<skipped> the rest", "the rest"),
    ("Numbers: 1,000,000 and 2.5 and 10-20.", "Numbers 1000000 and 2.5 and 10 - 20."),
    ("U.S.A. e.g. i.e. etc.", "USA eg ie etc"),
    ("running runs runner ran", "run running runs"),
    ("The generously relational conditional hopefulness", "generous relate condition hopeful"),
    ("happily dying skies innings proceeded", "happy die sky inning proceed"),
    ("caresses ponies ties cats feed agreed plastered", "caress pony tie cat feeds agree plaster"),
    ("x", "x"),
    ("x", "y"),
    ("a", "a a a a"),
    ("one two", "two one"),
    ("Repeated repeated REPEATED words words", "repeated words repeated words repeated"),
    ("The model should answer: yes.", "The model should answer: yes. The model should answer: yes."),
    ("A very long reference that keeps going on and on with many words so that the brevity penalty has a job to do here",
     "A very long reference"),
    ("short", "A much longer hypothesis that goes well beyond the single word of the reference text"),
    ("\"Quoted\" 'text' (parens) [brackets] {braces}", "Quoted text parens brackets braces"),
    ("email@example.com http://x.org/a?b=c#d", "email example com http x org a b c d"),
    ("C++ and C# are languages; so is F#.", "C and C are languages so is F"),
    ("ends with space dot .", "ends with space dot ."),
    ("MiXeD CaSe TeXt", "mixed case text"),
]


def alpaca_pairs() -> list:
    """Pairs from the 60 fixture records: each output against the next record's output, its own
    input, and itself with the first word dropped (deterministic, realistic text)."""
    records = json.loads((ROOT / "tests/fixtures/data/instruction_data_60.json").read_text())
    pairs = []
    for i, record in enumerate(records[:20]):
        following = records[(i + 1) % len(records)]["output"]
        variants = [following, record["input"] or record["instruction"], " ".join(record["output"].split()[1:])]
        pairs.append((record["output"], variants[i % 3]))
    return pairs


STEM_WORDS = """
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized hopping
tanned falling hissing fizzed failing filing happy sky relational conditional rational valenci hesitanci
digitizer conformabli radicalli differentli vileli analogousli vietnamization predication operator
feudalism decisiveness hopefulness callousness formaliti sensitiviti sensibiliti triplicate formative
formalize electriciti electrical hopeful goodness revival allowance inference airliner gyroscopic
adjustable defensible irritant replacement adjustment dependent adoption homologou communism activate
angulariti homologous effective bowdlerize probate rate cease controll roll dying lying tying news
innings inning outings outing cannings canning howe proceed exceed succeed skies dies tied spied cried
enjoy enjoyment generously analogically logic apology archaeology yyyy syzygy toys abbatial fully
carefully skillfully beautifully ied ies died lies agreed disagreed needed seeded bleed zzzz
oats trees ivy troubles private oaten orrery sized fizzed plastered hopping tanned filed failed
generalization generalizations oscillators fluently rationally feudalisms 1990s 2nds ab12cd mmmm
""".split()


def rouge_f(scorer, reference, hypothesis):
    scores = scorer.score(reference, hypothesis)
    return {kind: scores[kind].fmeasure for kind in ROUGE_TYPES}


def main():
    pairs = PAIRS + alpaca_pairs()
    plain = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)
    corpus_bleu, corpus_chrf = BLEU(), CHRF()
    tok13a = Tokenizer13a()
    rows = []
    for reference, hypothesis in pairs:
        rows.append({
            "reference": reference,
            "hypothesis": hypothesis,
            "rouge": rouge_f(plain, reference, hypothesis),
            "rouge_stemmed": rouge_f(stemmed, reference, hypothesis),
            "bleu": sacrebleu.sentence_bleu(hypothesis, [reference]).score,
            "chrf": corpus_chrf.sentence_score(hypothesis, [reference]).score,
            "tok13a_reference": tok13a(reference.rstrip()),
            "tok13a_hypothesis": tok13a(hypothesis.rstrip()),
        })
    hypotheses = [h for _, h in pairs]
    references = [[r for r, _ in pairs]]
    words = sorted(set(STEM_WORDS) | {w for r, h in pairs for w in tokenize.tokenize(r + " " + h, None) if len(w) > 3})
    stemmer = PorterStemmer()
    assert stemmer.mode == PorterStemmer.NLTK_EXTENSIONS
    corpus = {
        "bleu": corpus_bleu.corpus_score(hypotheses, references).score,
        "chrf": corpus_chrf.corpus_score(hypotheses, references).score,
    }
    # A signature needs a scored corpus (it names the number of references).
    sentence_bleu = BLEU(effective_order=True)
    sentence_bleu.sentence_score(hypotheses[0], [references[0][0]])
    json.dump({
        "versions": {
            "rouge_score": version("rouge-score"),
            "sacrebleu": sacrebleu.__version__,
            "nltk": version("nltk"),
            "python": platform.python_version(),
        },
        "bleu_signature": str(corpus_bleu.get_signature()),
        "sentence_bleu_signature": str(sentence_bleu.get_signature()),
        "chrf_signature": str(corpus_chrf.get_signature()),
        "corpus": corpus,
        "pairs": rows,
        "stems": {w: stemmer.stem(w) for w in words},
        "python_whitespace": [c for c in range(sys.maxunicode + 1) if chr(c).isspace()],
    }, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
