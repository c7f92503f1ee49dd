"""The edits attacks are made of: text units, typos, look-alike and invisible characters, same-pinyin
Chinese characters. Pure Python; every random choice comes from the `random.Random` passed in, so an
attack is reproducible from its seed.

A text is cut into units, the things an attack changes and a budget counts: words for alphabetic
scripts, single characters for Chinese (which has no spaces; a character is its smallest unit of
meaning). Each `*_edits(unit, rng)` returns the replacements of one unit worth trying (none: the unit
is left alone).
"""

from __future__ import annotations

import functools
import random
import re

CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_LETTERS = rf"(?:(?![{CJK}])[^\W_])+"
UNIT = re.compile(rf"[{CJK}]|{_LETTERS}(?:['’]{_LETTERS})*")
IS_CJK = re.compile(rf"^[{CJK}]$")

# Words a substitution must not touch: function words and negations (changing "not" flips the meaning).
STOPWORDS = frozenset(word for line in (
    "a about above after again against all also am an and any are aren't as at be because been",
    "before being below between both but by can cannot could couldn't did didn't do does doesn't doing don't down",
    "during each either else ever few for from further had hadn't has hasn't have haven't having he her here hers",
    "herself him himself his how however i if in into is isn't it its itself just least less may me might more most",
    "must mustn't my myself neither never no nobody none nor not nothing now n't of off on once only or other our ours",
    "ourselves out over own same shall she should shouldn't so some such than that the their theirs them themselves",
    "then there these they this those though through to too under until up upon us very was wasn't we were weren't",
    "what when where whether which while who whom whose why will with within without won't would wouldn't yet you",
    "your yours yourself yourselves",
) for word in line.split())

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
HOMOGLYPHS = {  # Latin letter -> a Cyrillic/Greek/Armenian letter drawn (nearly) the same
    "a": "а", "c": "с", "d": "ԁ", "e": "е", "g": "ɡ", "h": "һ", "i": "і", "j": "ј", "k": "κ", "l": "ӏ",
    "n": "ո", "o": "о", "p": "р", "q": "ԛ", "s": "ѕ", "u": "υ", "v": "ν", "w": "ԝ", "x": "х", "y": "у",
    "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І", "J": "Ј", "K": "К", "M": "М", "N": "Ν",
    "O": "О", "P": "Р", "S": "Ѕ", "T": "Т", "X": "Х", "Y": "Υ", "Z": "Ζ", "0": "О", "1": "ӏ",
}
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")  # zero-width space/non-joiner/joiner, joiners


def units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word (letters/digits, inner apostrophes) or Chinese character of `text`."""
    return [m.span() for m in UNIT.finditer(text)]


def render(text: str, spans: list[tuple[int, int]], subs: dict[int, str]) -> str:
    """`text` with unit i replaced by subs[i] (an empty string deletes it); everything else kept as is."""
    out, last = [], 0
    for i in sorted(subs):
        start, end = spans[i]
        out += [text[last:start], subs[i]]
        last = end
    out.append(text[last:])
    return "".join(out)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (characters inserted, deleted or substituted)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def match_case(word: str, like: str) -> str:
    """`word` in the capitalisation of `like` (UPPER, Title or as is)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@functools.cache
def keyboard_neighbours() -> dict[str, str]:
    """QWERTY neighbours of each letter: left/right on its row, and the nearest keys above and below."""
    near: dict[str, str] = {}
    for r, row in enumerate(KEYBOARD_ROWS):
        for c, ch in enumerate(row):
            keys = [row[c - 1] if c else "", row[c + 1] if c + 1 < len(row) else ""]
            for other, shift in ((r - 1, (0, 1)), (r + 1, (-1, 0))):
                if 0 <= other < len(KEYBOARD_ROWS):
                    keys += [KEYBOARD_ROWS[other][c + s] for s in shift if 0 <= c + s < len(KEYBOARD_ROWS[other])]
            near[ch] = "".join(k for k in keys if k)
    return near


def _pick(rng: random.Random, positions: list[int]) -> int | None:
    return rng.choice(positions) if positions else None


def typo_edits(word: str, rng: random.Random) -> list[str]:
    """DeepWordBug's four typos, one random position each: swap, delete, insert, keyboard substitution."""
    if not any(ch.isalpha() for ch in word) or IS_CJK.match(word):
        return []
    out = []
    if len(word) >= 2:
        i = rng.randrange(len(word) - 1)
        out.append(word[:i] + word[i + 1] + word[i] + word[i + 2:])
        i = rng.randrange(len(word))
        out.append(word[:i] + word[i + 1:])
    i = rng.randrange(len(word) + 1)
    out.append(word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i:])
    near = keyboard_neighbours()
    i = _pick(rng, [k for k, ch in enumerate(word) if ch.lower() in near])
    if i is not None:
        key = rng.choice(near[word[i].lower()])
        out.append(word[:i] + (key.upper() if word[i].isupper() else key) + word[i + 1:])
    return list(dict.fromkeys(e for e in out if e != word))


def lookalike_edits(word: str, rng: random.Random) -> list[str]:
    """One letter replaced by a homoglyph from another script, and one by its full-width form."""
    out = []
    i = _pick(rng, [k for k, ch in enumerate(word) if ch in HOMOGLYPHS])
    if i is not None:
        out.append(word[:i] + HOMOGLYPHS[word[i]] + word[i + 1:])
    i = _pick(rng, [k for k, ch in enumerate(word) if "!" <= ch <= "~"])
    if i is not None:
        out.append(word[:i] + chr(ord(word[i]) + 0xFEE0) + word[i + 1:])
    return out


def invisible_edits(word: str, rng: random.Random) -> list[str]:
    """Two zero-width characters slipped inside the word (after its first character for one-letter units)."""
    out = []
    for mark in rng.sample(INVISIBLE, 2):
        i = rng.randrange(1, len(word)) if len(word) > 1 else 1
        out.append(word[:i] + mark + word[i:])
    return out


@functools.cache
def toneless(ch: str) -> str:
    """`ch`'s common reading in Latin letters without tones ('' when pypinyin has none)."""
    from pypinyin import lazy_pinyin

    reading = lazy_pinyin(ch)[0]
    return reading if reading.isascii() and reading.isalpha() else ""


@functools.cache
def homophone_index(allowed: frozenset[str] | None) -> dict[str, tuple[str, ...]]:
    """Toneless pinyin -> the characters read so (common reading), among `allowed` (default: all CJK)."""
    from pypinyin.pinyin_dict import pinyin_dict

    chars = allowed if allowed else {chr(c) for c in pinyin_dict if 0x4E00 <= c <= 0x9FFF}
    index: dict[str, list[str]] = {}
    for ch in sorted(chars):
        if IS_CJK.match(ch) and (reading := toneless(ch)):
            index.setdefault(reading, []).append(ch)
    return {k: tuple(v) for k, v in index.items()}


def pinyin_edits(unit: str, rng: random.Random, count: int, allowed: frozenset[str] | None = None) -> list[str]:
    """Up to `count` - 1 characters with the same pinyin (tones ignored), then the pinyin spelled in Latin
    letters (both common ways to dodge Chinese keyword filters: 微信 -> 威信 / weixin): `count` substitutes
    in all, so --candidates bounds the queries per character as it does for synonyms."""
    if not IS_CJK.match(unit):
        return []
    reading = toneless(unit)
    if not reading:
        return []
    same = [ch for ch in homophone_index(allowed).get(reading, ()) if ch != unit]
    return rng.sample(same, min(count - 1, len(same))) + [reading]
