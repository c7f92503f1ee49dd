"""Same-sound character recognition for Chinese text, the Chinese half of `finetune classify --correct-typos`.

Why: Chinese is typed through pinyin input methods, so its typos, and the cheapest way to dodge a keyword
filter (微信 -> 威信 / weixin), are characters with the same reading, or the reading itself in Latin letters.
A tokenizer reads 头诉 as something unrelated to 投诉, and one such character in the word that carries the
label flips a classifier (`genforge robustness eval --attack pinyin`). Reading every clause as the most
probable characters *with the readings it shows* undoes most of them: a character-bigram model of the
training texts scores the candidates (each character's homophones among the training texts' characters),
a Viterbi pass (`lattice.best_path`) picks the best sequence, and changing a written character costs CHANGE_COST nats, so text
that the bigrams already explain stays as it is. A run of lower-case Latin letters glued to Chinese
characters (`我要tou诉`), or standing between punctuation in a Chinese text (`一直定这家,zan`), that splits
into pinyin syllables is read as characters.

The counts are the training texts' characters and character pairs, saved with the classifier in
`typo_vocabulary.txt` beside the English words, so the model reads text the same way wherever it is loaded.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter

from genforge.adversarial.transforms import CJK, IS_CJK, homophone_index, toneless
from genforge.finetune.lattice import best_path

CJK_RUN = re.compile(f"[{CJK}]+")
START, END = "^", "$"  # the edges of a run of characters, in pair counts
# A clause: characters and the lower-case Latin runs glued to them (not the tail of `Shanghai` or `iPhone`).
STRETCH = re.compile(f"(?:[{CJK}]|(?<![A-Za-z])[a-z]++(?![A-Za-z0-9]))+")
UNIT = re.compile(f"[{CJK}]|[a-z]+")  # a clause's positions: a character, or a Latin run to split into syllables
CHANGE_COST = 8.0  # nats a written character must be improbable by before it is read as a homophone
CANDIDATES = 12  # homophones tried per character: the most frequent in the training texts
MIN_COUNT = 2  # times a character must occur in the training texts to be a candidate
SMOOTHING = 1.0  # weight of the unigram estimate in each character's next-character distribution
LONGEST_SYLLABLE = 6  # "zhuang"
CACHED_CLAUSES = 1 << 16  # an attack re-reads the same clauses many times


def cjk_counts(text: str) -> Counter:
    """The Chinese characters and adjacent character pairs of `text` (NFKC-normalised already), a run's edges
    as pairs with START and END (`^投`, `诉$`): 啦 ends clauses, 拉 hardly does."""
    counts: Counter = Counter()
    for run in CJK_RUN.findall(text):
        counts.update(run)
        padded = START + run + END
        counts.update(padded[i:i + 2] for i in range(len(padded) - 1))
    return counts


@functools.cache
def syllables() -> frozenset[str]:
    """Every toneless pinyin syllable pypinyin knows (about 400)."""
    return frozenset(homophone_index(None))


def split_syllables(latin: str) -> list[str] | None:
    """`latin` as the fewest pinyin syllables (`tousu` -> tou su), or None when it is not pinyin."""
    best: list[list[str] | None] = [[]] + [None] * len(latin)
    for end in range(1, len(latin) + 1):
        for start in range(max(0, end - LONGEST_SYLLABLE), end):
            head = best[start]
            if head is not None and latin[start:end] in syllables() and (
                    best[end] is None or len(head) + 1 < len(best[end])):
                best[end] = head + [latin[start:end]]
    return best[-1]


class HomophoneReader:
    """`reader(text)` -> `text` with same-sound misspellings of Chinese characters read back (module doc)."""

    def __init__(self, counts: dict[str, int]):
        self.pairs = {k: v for k, v in counts.items() if len(k) == 2 and (IS_CJK.match(k[0]) or k[0] == START)
                      and (IS_CJK.match(k[1]) or k[1] == END)}
        self.chars = {k: v for k, v in counts.items() if len(k) == 1 and IS_CJK.match(k)}
        self.total = sum(self.chars.values())
        runs = sum(v for k, v in self.pairs.items() if k[0] == START)
        # no edges: no Chinese text, or a vocabulary counted before this reader existed (it read text as written)
        self.chars = self.chars | {START: runs, END: runs} if runs else {}
        self.read = functools.lru_cache(CACHED_CLAUSES)(self._read)

    @functools.cached_property
    def by_reading(self) -> dict[str, tuple[str, ...]]:
        """Toneless reading -> the training texts' characters read so, most frequent first."""
        index: dict[str, list[str]] = {}
        for ch, n in sorted(self.chars.items(), key=lambda kv: (-kv[1], kv[0])):
            if n >= MIN_COUNT and IS_CJK.match(ch) and (reading := toneless(ch)):
                index.setdefault(reading, []).append(ch)
        return {k: tuple(v[:CANDIDATES]) for k, v in index.items()}

    def _unigram(self, ch: str) -> float:
        """P(ch), add-one smoothed."""
        return (self.chars.get(ch, 0) + 1) / (self.total + len(self.chars) + 1)

    def _bigram(self, a: str, b: str) -> float:
        """log P(b | a), the pair's count smoothed towards b's own frequency."""
        return math.log((self.pairs.get(a + b, 0) + SMOOTHING * self._unigram(b)) / (self.chars.get(a, 0) + SMOOTHING))

    def _candidates(self, written: str | None, reading: str) -> list[tuple[str, float]]:
        """(character, cost) pairs for one position: the written character is free, a homophone costs."""
        out = [(written, 0.0)] if written else []
        return out + [(ch, CHANGE_COST if written else 0.0) for ch in self.by_reading.get(reading, ())
                      if ch != written]

    def _decode(self, positions: list[tuple[str | None, str]]) -> str:
        """The best-scoring characters for the positions under the bigram model."""
        columns = [self._candidates(w, r) or [(w or r, 0.0)] for w, r in positions]
        return "".join(best_path(columns, self._bigram, START, END))

    def _read(self, clause: str) -> str:
        """One clause read back; Latin runs that are not pinyin split it and stay as they are."""
        pieces, positions = [], []
        for m in UNIT.finditer(clause):
            unit = m.group()
            if IS_CJK.match(unit):
                positions.append((unit, toneless(unit)))
            elif (split := split_syllables(unit)) is not None:
                positions += [(None, s) for s in split]
            else:
                pieces += [self._decode(positions) if positions else "", unit]
                positions = []
        return "".join(pieces) + (self._decode(positions) if positions else "")

    def __call__(self, text: str) -> str:
        if not self.chars or not CJK_RUN.search(text):
            return text
        def clause(m: re.Match) -> str:
            alone = not CJK_RUN.search(m.group())  # pinyin between punctuation (`,zan!`) is read; `ok hao` is not
            spaced = text[m.start() - 1:m.start()].isspace() or text[m.end():m.end() + 1].isspace()
            return m.group() if alone and spaced else self.read(m.group())

        return STRETCH.sub(clause, text)

    def __deepcopy__(self, memo: dict) -> HomophoneReader:
        return self  # read-only once built, like the corrector that holds it
