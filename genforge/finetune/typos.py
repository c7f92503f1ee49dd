"""Word recognition in front of a classifier (`finetune classify --correct-typos`): misspelt words are mapped
back to known words before the tokenizer sees them.

Why: a sub-word tokenizer turns `proift` into pieces unrelated to `profit`, and one typo in the word that
carries the label flips most classifiers (DeepWordBug; `genforge robustness eval --attack charswap`).
Adversarial training teaches a model some typos; recognising the word first removes most of them for every
model, at no training cost. This is the dictionary backoff of Pruthi et al. 2019 ("Combating adversarial
misspellings with robust word recognition"), with SymSpell's symmetric-delete lookup (symspellpy) over an
English frequency list (symspellpy's 82,765 words) plus the words of the training texts.

Rules, each from a measured failure on clean financial news and tweets (names, acronyms and link fragments
that look like misspelt English words):
- only alphabetic ASCII words of >= 3 letters that neither list knows are touched, in lower case, or in Title
  case where a sentence starts (elsewhere a capital marks a name); acronyms, mixed case, numbers, other
  scripts, words with an apostrophe, links, @handles, #tags, $tickers and a word cut off by an ellipsis (a
  truncated post) pass as they are;
- a candidate is one edit away (Damerau: a swap of two letters is one edit) and occurs >= 2 times in the
  training texts, so a name one letter from an English word is left alone;
- the most probable candidate wins under an equal mixture of the general and the training texts' word
  frequencies (a financial `rse` is `rose`, not `use`).
Texts are NFKC-normalised first (full-width letters -> ASCII) and lose their invisible format characters
(zero-width spaces and joiners, bidi marks, soft hyphens: Unicode category Cf), which split a word for the
tokenizer without showing on screen; Chinese text is read through `homophones.HomophoneReader` (same-sound
characters). The training texts' word counts (and Chinese character and pair counts) are saved with the
classifier (`typo_vocabulary.txt`), so it corrects the same way wherever it is loaded.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections import Counter
from pathlib import Path

from genforge.artifacts import atomic_write_text, reading
from genforge.finetune.homophones import CJK_RUN, HomophoneReader, cjk_counts

VOCABULARY = "typo_vocabulary.txt"  # "word<TAB>count" lines of the training texts, in a classifier folder
ENGLISH = "frequency_dictionary_en_82_765.txt"  # symspellpy's own list: "word count" lines
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
TOKENS = re.compile(rf"(?P<other>https?://\S+|www\.\S+|[@#$]\w+|{WORD.pattern}(?=…|\.\.\.))|{WORD.pattern}")
OPENERS = frozenset(" \t\"'(“‘")  # between a sentence's end and its first word
MIN_LETTERS = 3
MIN_COUNT = 2  # times a correction must occur in the training texts
CACHED_WORDS = 1 << 16  # corrections remembered per model: streams repeat their words


class TypoCorrector:
    """`corrector(text)` -> the text with misspelt words replaced (see the module's rules)."""

    def __init__(self, counts: dict[str, int]):
        from symspellpy import SymSpell

        self.counts = counts  # training-text word -> count (lower case)
        self.lookup = SymSpell(max_dictionary_edit_distance=1)
        self.lookup.load_dictionary(str(importlib.resources.files("symspellpy") / ENGLISH), 0, 1)
        self.english = dict(self.lookup.words)
        for word, count in counts.items():
            if word not in self.english and not CJK_RUN.search(word):
                self.lookup.create_dictionary_entry(word, count)
        self.english_total = sum(self.english.values()) or 1
        self.domain_total = sum(counts.values()) or 1
        self.recognise = functools.lru_cache(CACHED_WORDS)(self._recognise)
        self.homophones = HomophoneReader(counts)

    def _probability(self, word: str) -> float:
        return (self.english.get(word, 0) / self.english_total + self.counts.get(word, 0) / self.domain_total) / 2

    def _recognise(self, low: str) -> str | None:
        """The known word `low` (a lower-case unknown word) was most probably meant to be, if any."""
        from symspellpy import Verbosity

        if len(low) < MIN_LETTERS or low in self.lookup.words:
            return None
        candidates = [s.term for s in self.lookup.lookup(low, Verbosity.ALL, max_edit_distance=1)
                      if self.counts.get(s.term, 0) >= MIN_COUNT]
        return max(candidates, key=self._probability, default=None)

    def __deepcopy__(self, memo: dict) -> TypoCorrector:
        return self  # read-only once built: a copied model (compress works on copies) shares it

    def word(self, word: str, sentence_start: bool) -> str:
        """`word` corrected; a Title-case one only at `sentence_start` (elsewhere it is taken for a name)."""
        if not word.isascii() or "'" in word or not (word.islower() or (word.istitle() and sentence_start)):
            return word
        found = self.recognise(word.lower())
        if found is None:
            return word
        return found[:1].upper() + found[1:] if word[:1].isupper() else found

    def __call__(self, text: str) -> str:
        text = self.homophones(without_format_characters(unicodedata.normalize("NFKC", text)))
        return TOKENS.sub(lambda m: m.group() if m.group("other") else
                          self.word(m.group(), starts_sentence(text, m.start())), text)

    def correct(self, texts: list[str]) -> list[str]:
        return [self(t) for t in texts]


def starts_sentence(text: str, i: int) -> bool:
    """Whether position `i` of `text` begins the text or a sentence (after . ! ? : ; or a line break)."""
    i -= 1
    while i >= 0 and text[i] in OPENERS:
        i -= 1
    return i < 0 or text[i] in ".!?:;\n"


def without_format_characters(text: str) -> str:
    return text if text.isascii() else "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def word_counts(texts: list[str]) -> dict[str, int]:
    """Lower-case word -> count over `texts`, and Chinese character and pair -> count, as the corrector reads
    them (NFKC-normalised, without format characters)."""
    counts: Counter = Counter()
    for text in texts:
        text = without_format_characters(unicodedata.normalize("NFKC", text))
        counts.update(w.lower() for w in WORD.findall(CJK_RUN.sub(" ", text)))
        counts.update(cjk_counts(text))
    return dict(counts)


def save_vocabulary(counts: dict[str, int], folder: Path) -> None:
    lines = (f"{word}\t{count}\n" for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    atomic_write_text(Path(folder) / VOCABULARY, "".join(lines))


def load_corrector(folder: Path) -> TypoCorrector | None:
    """The corrector a classifier folder was trained with; None when it was trained without one."""
    path = Path(folder) / VOCABULARY
    if not path.is_file():
        return None
    counts = {}
    with reading(path, "copy it again from the classifier's training run"):
        for line in path.read_text(encoding="utf-8").splitlines():
            word, count = line.split("\t")
            counts[word] = int(count)
    return TypoCorrector(counts)
