"""Word recognition in front of a classifier (`finetune classify --correct-typos`): misspelt words are read
back as the words meant before the tokenizer sees them.

Why: a sub-word tokenizer turns `proift` into pieces unrelated to `profit`, and one typo in the word that
carries the label flips most classifiers (DeepWordBug; `genforge robustness eval --attack charswap`).
Adversarial training teaches a model some typos; recognising the word first removes most of them for every
model, at no training cost (Pruthi et al. 2019, "Combating adversarial misspellings with robust word
recognition").

Texts are NFKC-normalised first (full-width letters -> ASCII) and lose their invisible format characters
(zero-width spaces and joiners, bidi marks, soft hyphens: Unicode category Cf), which split a word for the
tokenizer without showing on screen. Chinese is then read through `homophones.HomophoneReader` (same-sound
characters and glued pinyin), English through `english.EnglishReader` (one-edit typos, in context). The
training texts' counts (English words and word pairs, Chinese characters and character pairs) are saved
with the classifier (`typo_vocabulary.txt`), so it reads text the same way wherever it is loaded.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path

from genforge.artifacts import atomic_write_text, reading
from genforge.finetune.english import WORD, EnglishReader, word_pairs
from genforge.finetune.homophones import HomophoneReader, cjk_counts

VOCABULARY = "typo_vocabulary.txt"  # "key<TAB>count" lines of the training texts, in a classifier folder


class TypoCorrector:
    """`corrector(text)` -> the text with misspelt words read back (see the module's doc)."""

    def __init__(self, counts: dict[str, int]):
        self.counts = counts  # training-text words, word pairs, characters, character pairs -> count
        self.english = EnglishReader(counts)
        self.homophones = HomophoneReader(counts)

    def __deepcopy__(self, memo: dict) -> TypoCorrector:
        return self  # read-only once built: a copied model (compress works on copies) shares it

    def __call__(self, text: str) -> str:
        return self.english(self.homophones(without_format_characters(unicodedata.normalize("NFKC", text))))

    def correct(self, texts: list[str]) -> list[str]:
        return [self(t) for t in texts]


def without_format_characters(text: str) -> str:
    return text if text.isascii() else "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def word_counts(texts: list[str]) -> dict[str, int]:
    """Lower-case word and word pair ("a b") -> count over `texts`, and Chinese character and character pair
    -> count, as the corrector reads them (NFKC-normalised, without format characters)."""
    counts: Counter = Counter()
    for text in texts:
        text = without_format_characters(unicodedata.normalize("NFKC", text))
        counts.update(w.lower() for w in WORD.findall(text))
        counts.update(word_pairs(text))
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
