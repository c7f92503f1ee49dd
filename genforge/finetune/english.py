"""Misspelt English words read back in context, the English half of `finetune classify --correct-typos`.

Why: a sub-word tokenizer turns `proift` into pieces unrelated to `profit`, and one typo in the word that
carries the label flips most classifiers (DeepWordBug; `genforge robustness eval --attack charswap`). Mapping
each unknown word to its most frequent one-edit neighbour (the dictionary backoff of Pruthi et al. 2019)
undoes most random typos, but an attack searches for the others, and measured on PhraseBank most of what it
then found were typos the word alone cannot tell: ones that land on another listed word (`won` -> `own`,
`and` -> `nd`, `the` -> `th`: an 82k-word list holds many rare words) and ones with several neighbours
(`wno` -> `no` or `won`). So each sentence is read as a whole: every word may be itself or a one-edit
neighbour (SymSpell's symmetric-delete lookup over symspellpy's English list and the training texts'
words), a word-bigram model scores the sequences (the training texts' word pairs, mixed with symspellpy's
243k English bigrams and a unigram back-off), a Viterbi pass picks the best one, and changing a word costs
CHANGE_COST nats, so text the bigrams already explain stays as written.

Which words may change, each rule from a measured false correction on clean financial news and tweets:
ASCII words without an apostrophe, in lower case, or in Title case where a sentence starts and only when
unknown (elsewhere a capital marks a name); words glued to a digit or a Chinese character (`177xxxx0056`,
`大杯grande`: codes and brand names in Chinese reviews), acronyms, mixed case, numbers, other scripts, links, @handles,
#tags, $tickers and a word cut off by an ellipsis (a truncated post) pass as they are. A neighbour must occur
MIN_COUNT times in the training texts or, for a lower-case word, be a common English word (ENGLISH_MIN;
a Title-case name one edit from a common word stays a name), and adding or dropping a
final `s` is no correction (`volumes` -> `volume` only loses what the writer meant).
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import math
import re
from collections import Counter

from genforge.adversarial.transforms import CJK
from genforge.finetune.lattice import Column, best_path

ENGLISH = "frequency_dictionary_en_82_765.txt"  # symspellpy's word list: "word count" lines
ENGLISH_PAIRS = "frequency_bigramdictionary_en_243_342.txt"  # symspellpy's bigrams: "word word count" lines
LETTER = f"(?:(?![{CJK}])[^\\W\\d_])"  # a letter of an alphabet: Chinese characters are read by `homophones`
WORD = re.compile(f"{LETTER}+(?:['’]{LETTER}+)*")
TOKENS = re.compile(rf"(?P<other>https?://\S+|www\.\S+|[@#$]\w+|{WORD.pattern}(?=…|\.\.\.))|{WORD.pattern}")
SENTENCE_END = re.compile(f"[.!?:;](?![^\\s])|\n|[{CJK}]")  # not a decimal point; Chinese breaks too
OPENERS = frozenset(" \t\"'(“‘")  # between a sentence's end and its first word
START, END = "^", "$"  # a sentence's edges, in word pairs ("^ operating", "rose $")
CHANGE_COST = 6.0  # nats a written word must be improbable by before it is read as a neighbour
COMMON_COST = 4.0  # more for a common word: a typo landing on one is rarer than one landing on a rare word
NAME_COST = 7.0  # more for an unknown capitalised word where a sentence starts: most are names, not typos
NEIGHBOURS = 8  # most frequent neighbours tried per word (a short word has dozens; its typos are of common ones)
MIN_COUNT = 2  # times a neighbour must occur in the training texts (unless it is a common English word)
ENGLISH_MIN = 3_000_000  # symspellpy count of a common English word (about the 20,000th most frequent)
WEIGHTS = (0.45, 0.25, 0.30)  # of the training texts' pairs, the English pairs and the unigram back-off
FLOOR = 1e-9  # the unigram probability of a word neither list knows
CACHED = 1 << 16  # neighbour lists and pair scores remembered: an attack re-reads the same words many times


def sentences(text: str) -> list[list[re.Match]]:
    """The word tokens of `text` (links, handles, tickers and cut-off words left out) by sentence."""
    out: list[list[re.Match]] = [[]]
    last = 0
    for m in TOKENS.finditer(text):
        if SENTENCE_END.search(text, last, m.start()) and out[-1]:
            out.append([])
        last = m.end()
        if not m.group("other"):
            out[-1].append(m)
    return [s for s in out if s]


def word_pairs(text: str) -> Counter:
    """The adjacent lower-case word pairs of each sentence of `text`, its edges as START and END."""
    pairs: Counter = Counter()
    for sentence in sentences(text):
        words = [START, *(m.group().lower() for m in sentence), END]
        pairs.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return pairs


def starts_sentence(text: str, i: int) -> bool:
    """Whether position `i` of `text` begins the text or a sentence (after . ! ? : ; or a line break)."""
    i -= 1
    while i >= 0 and text[i] in OPENERS:
        i -= 1
    return i < 0 or text[i] in ".!?:;\n"


@functools.cache
def english_pairs() -> tuple[dict[str, int], dict[str, int]]:
    """symspellpy's English bigrams ("a b" -> count) and each first word's total over them."""
    pairs, firsts = {}, Counter()
    with open(importlib.resources.files("symspellpy") / ENGLISH_PAIRS, encoding="utf-8") as f:
        for line in f:
            a, b, count = line.split()
            pairs[f"{a} {b}"] = int(count)
            firsts[a] += int(count)
    return pairs, dict(firsts)


class EnglishReader:
    """`reader(text)` -> `text` with misspelt English words read back (module doc). `counts`: the training
    texts' words and word pairs (`word_pairs`); a vocabulary without pairs is read with English pairs alone."""

    def __init__(self, counts: dict[str, int]):
        from symspellpy import SymSpell

        self.words = {k: v for k, v in counts.items() if WORD.fullmatch(k)}
        self.pairs = {k: v for k, v in counts.items() if " " in k}
        firsts: Counter = Counter()
        for pair, n in self.pairs.items():
            firsts[pair.split(" ")[0]] += n
        self.firsts = dict(firsts)
        self.lookup = SymSpell(max_dictionary_edit_distance=1)
        self.lookup.load_dictionary(str(importlib.resources.files("symspellpy") / ENGLISH), 0, 1)
        self.english = dict(self.lookup.words)
        for word, count in self.words.items():
            if word not in self.english:
                self.lookup.create_dictionary_entry(word, count)
        self.english_pairs, self.english_firsts = english_pairs()
        self.english_total = sum(self.english.values()) or 1
        self.domain_total = sum(self.words.values()) or 1
        self.edges = max(self.firsts.get(START, 0) / self.domain_total, FLOOR) if self.pairs else 0.05  # per word
        self.neighbours = functools.lru_cache(CACHED)(self._neighbours)
        self.log_p = functools.lru_cache(CACHED)(self._log_p)

    def __deepcopy__(self, memo: dict) -> EnglishReader:
        return self  # read-only once built: a copied model (compress works on copies) shares it

    def unigram(self, word: str) -> float:
        if word in (START, END):
            return self.edges
        return max((self.english.get(word, 0) / self.english_total + self.words.get(word, 0) / self.domain_total) / 2,
                   FLOOR)

    def _log_p(self, a: str, b: str) -> float:
        """log P(b | a): the training texts' and the English pairs, backed off to b's unigram probability."""
        p, total = WEIGHTS[2] * self.unigram(b), WEIGHTS[2]
        if n := self.firsts.get(a):
            p, total = p + WEIGHTS[0] * self.pairs.get(f"{a} {b}", 0) / n, total + WEIGHTS[0]
        if b != END and (n := self.english_firsts.get(a)):
            p, total = p + WEIGHTS[1] * self.english_pairs.get(f"{a} {b}", 0) / n, total + WEIGHTS[1]
        return math.log(p / total)

    def _neighbours(self, low: str, title: bool) -> tuple[str, ...]:
        """The known words one edit from `low` that it may be read as (module doc); a Title-case word only as
        a training-text word (a name one edit from a common word stays a name)."""
        from symspellpy import Verbosity

        found = [s.term for s in self.lookup.lookup(low, Verbosity.ALL, max_edit_distance=1)
                 if s.term != low and s.term.isascii() and s.term.isalpha()
                 and (self.common(s.term) if not title else self.words.get(s.term, 0) >= MIN_COUNT)
                 and s.term + "s" != low and low + "s" != s.term]
        return tuple(sorted(found, key=self.unigram, reverse=True)[:NEIGHBOURS])

    def _column(self, text: str, m: re.Match) -> Column:
        word = m.group()
        low = word.lower()
        title = not word.islower()
        glued = text[m.start() - 1:m.start()].isalnum() or text[m.end():m.end() + 1].isalnum()
        changeable = word.isascii() and "'" not in word and not glued and (not title or (
            word.istitle() and low not in self.lookup.words and starts_sentence(text, m.start())))
        if not changeable:
            return [(low, 0.0)]
        cost = CHANGE_COST + (NAME_COST if title else COMMON_COST if self.common(low) else 0.0)
        return [(low, 0.0)] + [(n, cost) for n in self.neighbours(low, title)]

    def common(self, word: str) -> bool:
        return self.words.get(word, 0) >= MIN_COUNT or self.english.get(word, 0) >= ENGLISH_MIN

    def __call__(self, text: str) -> str:
        pieces, last = [], 0
        for sentence in sentences(text):
            columns = [self._column(text, m) for m in sentence]
            if all(len(c) == 1 for c in columns):
                continue
            for m, read in zip(sentence, best_path(columns, self.log_p, START, END), strict=True):
                if read != m.group().lower():
                    pieces += [text[last:m.start()], read[:1].upper() + read[1:] if m.group()[:1].isupper() else read]
                    last = m.end()
        return "".join(pieces) + text[last:]
