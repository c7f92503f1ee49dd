"""Text normalisation and quality filters for raw documents.

`clean_text` repairs what real files carry (cp1252 punctuation mis-decoded as C1 controls, full-width
forms, zero-width and control characters, ragged whitespace) without changing what the text says.
The filters are small pure functions `filter(text, limit) -> reason | None`; `quality_reason` runs
them in a fixed order and the first reason found is what the stats count.

Everything is measured in characters, not words, so the same limits work for Chinese (no spaces) and
English. Hot paths are precompiled regexes and C-level str methods: this runs once per document.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from genforge.data.dedup import code_points, window_hashes
from genforge.data.pii import KINDS

# U+0080..U+009F almost never appear on purpose: they are cp1252 punctuation (… – — ‘ ’ “ ”) that was
# decoded as Latin-1 somewhere upstream (e.g. "\x96" in the UCI sentiment files). Map them back;
# the five code points cp1252 leaves undefined are dropped.
_C1 = re.compile("[\x80-\x9f]")
_C1_FIX = {chr(i): bytes([i]).decode("cp1252", errors="ignore") for i in range(0x80, 0xA0)}
_LINE_BREAKS = re.compile("[\x0b\x0c\u2028\u2029]")  # besides \r, which str.replace handles
# C0/DEL controls except \t and \n, zero-width space, direction marks and bidi controls, BOM, soft hyphen,
# and lone surrogates (a broken emoji in scraped JSON: no encoder takes them). Kept: the zero-width
# (non-)joiners U+200C/U+200D, which spell Persian and Indic words and join emoji sequences (👨‍👩‍👧).
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
                        "\ufeff\ud800-\udfff]")
# Compatibility forms folded to plain characters: full-width Latin letters and digits (ＡＢＣ１２３), Latin
# ligatures (ﬁ), half-width katakana, the ideographic and no-break spaces. Not NFKC as a whole: it would
# also turn Chinese full-width punctuation (，！？：) into ASCII, m² into m2 and ① into 1, changing what the
# text says and so what a model trained on it writes. (Dedup keys fold everything: dedup.normalize_for_dedup.)
_FOLD = {cp: unicodedata.normalize("NFKC", chr(cp)) for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
                                                            (0xFB00, 0xFB06), (0xFF65, 0xFF9F)) for cp in range(r[0], r[1] + 1)}
_FOLD |= {0x3000: " ", 0x00A0: " "}
_FOLDED = re.compile("[" + "".join(map(chr, _FOLD)) + "]")
_TRAILING_SPACE = re.compile(r"[ \t]+(?=\n)")
_INNER_SPACES = re.compile(r"(?<=\S) {2,}")  # leading indentation is kept: it means something in code
_BLANK_LINES = re.compile(r"\n{3,}")

# "Symbols": what is neither a letter/digit (any script), whitespace, nor ordinary prose punctuation
# (ASCII and CJK). Markup, code, ASCII art, emoji and boilerplate tables are rich in them.
_SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\[\]/%&@$\-–—‘’“”…、。，；：！？（）「」『』《》〈〉【】・·]|_")

_PLACEHOLDER = re.compile("<(?:" + "|".join(KINDS) + ")>")

NGRAM = 10  # characters per n-gram in the repetition filter: ~2 English words, a short Chinese phrase


def clean_text(text: str) -> str:
    """Normalise one document: cp1252 repair, NFC with compatibility forms folded (`_FOLD`), invisible
    characters out, whitespace tidied."""
    if _C1.search(text):
        text = _C1.sub(lambda m: _C1_FIX[m.group()], text)
    if _FOLDED.search(text):
        text = text.translate(_FOLD)
    text = unicodedata.normalize("NFC", text)  # after folding: half-width ｶﾞ composes to ガ
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", _LINE_BREAKS.sub("\n", text))
    # The substring tests are C-speed and usually false: they skip regex scans that would find nothing.
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_SPACE.sub("", text)
    if "  " in text:
        text = _INNER_SPACES.sub(" ", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def length_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    return None


def symbol_ratio(text: str) -> float:
    """Share of symbol characters among the non-whitespace characters.

    PII placeholders count as letters, so text that was already scrubbed filters the same way again.
    """
    if "<" in text:
        text = _PLACEHOLDER.sub("PII", text)
    visible = len(text) - text.count(" ") - text.count("\n") - text.count("\t")
    return _SYMBOL.subn("", text)[1] / visible if visible else 0.0


def symbol_reason(text: str, max_ratio: float) -> str | None:
    return "symbol_ratio" if symbol_ratio(text) > max_ratio else None


def repeated_line_ratio(text: str) -> float:
    """Share of characters in lines that repeat an earlier line (Gopher's dup-line character fraction)."""
    if "\n" not in text:
        return 0.0
    seen: set[str] = set()
    dup = total = 0
    for line in text.split("\n"):
        line = line.strip()
        total += len(line)
        if line in seen:
            dup += len(line)
        elif line:
            seen.add(line)
    return dup / total if total else 0.0


def repeated_ngram_ratio(text: str, n: int = NGRAM) -> float:
    """Share of the character n-grams that repeat an earlier one (0 = all distinct, ~1 = one phrase looped)."""
    count = len(text) - n + 1
    if count <= 1:
        return 0.0
    return 1.0 - len({text[i : i + n] for i in range(count)}) / count


def ngram_repeat_bounds(texts: list[str], n: int = NGRAM) -> np.ndarray:
    """An upper bound of `repeated_ngram_ratio` for each text, computed for all texts in a few numpy passes.

    The exact ratio costs a Python set of slices per document, the largest share of the filters' time.
    Here every n-gram becomes a hash tagged with its document's index (in the top bits) and one sort finds
    the distinct ones. A hash collision can only merge two n-grams: the distinct count never exceeds the
    true one, so the bound never falls below the exact ratio. A document whose bound is within the limit
    passes the exact test too; only the rest (a handful per corpus) need `repeated_ngram_ratio`.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    counts = np.maximum(lengths - n + 1, 0)
    bounds = np.zeros(len(texts))
    if not counts.any():
        return bounds
    h = window_hashes(code_points("".join(texts)), n)
    starts = np.cumsum(lengths) - lengths
    # The windows of each document: its first `counts` positions (the rest cross into the next one).
    doc = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
    pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    hash_bits = np.uint64(64 - max(1, (len(texts) - 1).bit_length()))  # the document index in the top bits
    keys = np.sort((doc << hash_bits) | (h[pos] >> (np.uint64(64) - hash_bits)))
    distinct = np.bincount((keys[np.r_[True, keys[1:] != keys[:-1]]] >> hash_bits).astype(np.int64),
                           minlength=len(texts))
    many = counts > 1  # as in repeated_ngram_ratio: 0 or 1 n-gram repeats nothing
    bounds[many] = 1.0 - distinct[many] / counts[many]
    return bounds


def repetition_reason(text: str, max_line_repeat: float, max_ngram_repeat: float) -> str | None:
    if max_line_repeat < 1.0 and repeated_line_ratio(text) > max_line_repeat:
        return "repetition"
    if max_ngram_repeat < 1.0 and repeated_ngram_ratio(text) > max_ngram_repeat:
        return "repetition"
    return None


def quality_reason(text: str, min_chars: int = 20, max_chars: int = 1_000_000, max_symbol_ratio: float = 0.2,
                   max_line_repeat: float = 0.3, max_ngram_repeat: float = 0.3) -> str | None:
    """The first quality problem of a cleaned document, or None if it passes every filter."""
    return (length_reason(text, min_chars, max_chars)
            or (symbol_reason(text, max_symbol_ratio) if max_symbol_ratio < 1.0 else None)
            or repetition_reason(text, max_line_repeat, max_ngram_repeat))
