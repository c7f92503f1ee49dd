import json

import pytest

from genforge.data.clean import (
    clean_text,
    length_reason,
    ngram_repeat_bounds,
    quality_reason,
    repeated_line_ratio,
    repeated_ngram_ratio,
    repetition_reason,
    symbol_ratio,
    symbol_reason,
)
from genforge.data.readers import split_text


@pytest.mark.parametrize("raw, expected", [
    ("ＡＢＣ１２３，ｆｕｌｌ-width", "ABC123，full-width"),  # full-width letters and digits folded
    ("ﬁne café", "fine café"),  # ligature decomposed, accents kept
    ("床前明月光，疑是地上霜。举头望明月！", "床前明月光，疑是地上霜。举头望明月！"),  # Chinese punctuation kept
    ("E = mc², 10 m², ①", "E = mc², 10 m², ①"),  # not NFKC: superscripts mean something
    ("ｶﾞｲﾄﾞ", "ガイド"),  # half-width katakana, voiced marks composed
    ("family 👨\u200d👩\u200d👧, Persian می\u200cخواهم", "family 👨\u200d👩\u200d👧, Persian می\u200cخواهم"),  # joiners
    ("a broken \ud83d emoji", "a broken emoji"),  # a lone surrogate from scraped JSON
    ("It\x96s perfect \x85 really", "It–s perfect … really"),  # cp1252 read as Latin-1, repaired
    ("a\x00b\x07c\x1bd\x7fe", "abcde"),  # control characters
    ("zero\u200bwidth\u200e mark\ufeff soft\u00adhyphen", "zerowidth mark softhyphen"),
    ("tab\tkept\nnewline kept", "tab\tkept\nnewline kept"),
    ("windows\r\nold mac\rline\u2028sep\x0cfeed", "windows\nold mac\nline\nsep\nfeed"),
    ("too    many   spaces", "too many spaces"),
    ("    indented code\n        deeper", "indented code\n        deeper"),  # doc strip, inner indent kept
    ("trailing   \t\nspace", "trailing\nspace"),
    ("para one\n\n\n\n\npara two", "para one\n\npara two"),
    ("\u3000全角空格\u3000和\u00a0不换行空格 ", "全角空格 和 不换行空格"),
    ("  \n\t \u200b ", ""),
])
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_clean_text_is_idempotent():
    raw = "Ｈｅｌｌｏ\x96  world\r\n\n\n\u200bnext\x85 ｐａｒａ  "
    once = clean_text(raw)
    assert clean_text(once) == once


def test_length_reason():
    assert length_reason("", 5, 10) == "empty"
    assert length_reason("abc", 5, 10) == "too_short"
    assert length_reason("a" * 11, 5, 10) == "too_long"
    assert length_reason("a" * 5, 5, 10) is None
    assert length_reason("中文五个字", 5, 10) is None  # characters, not bytes or words


def test_symbol_filter():
    assert symbol_ratio("Plain prose, with (ordinary) punctuation: fine!") == 0.0
    assert symbol_ratio("床前明月光，疑是地上霜。举头望明月，低头思故乡。") == 0.0
    junk = "|====|====|\n{{#if}} <<<>>> ~~~ *** ^^^ ___"
    assert symbol_ratio(junk) > 0.8
    assert symbol_reason(junk, 0.2) == "symbol_ratio"
    assert symbol_reason("a # b", 0.5) is None  # 1 symbol of 3 visible characters
    assert symbol_reason("a # b", 0.3) == "symbol_ratio"
    assert symbol_ratio("") == 0.0
    assert symbol_ratio("<EMAIL> <PHONE>") == 0.0  # placeholders of scrubbed PII are not symbols


def test_repeated_lines():
    assert repeated_line_ratio("one line only") == 0.0
    spam = "\n".join(["Click here to subscribe"] * 4 + ["real content line"])
    assert repeated_line_ratio(spam) == pytest.approx(3 * 23 / (4 * 23 + 17))
    assert repetition_reason(spam, 0.3, 1.0) == "repetition"
    assert repetition_reason("a line\nanother line\na third", 0.3, 1.0) is None


def test_repeated_ngrams_english_and_chinese():
    assert repeated_ngram_ratio("short") == 0.0
    assert repeated_ngram_ratio("every ten-character window of this sentence is new") == 0.0
    assert repeated_ngram_ratio("buy now! " * 20) > 0.8
    assert repeated_ngram_ratio("好好学习，天天向上。" * 10) > 0.8  # no spaces needed
    assert repetition_reason("ha " * 30, 1.0, 0.3) == "repetition"
    assert repetition_reason("ha " * 30, 1.0, 1.0) is None  # 1 disables the filter


def test_ngram_bounds_match_the_exact_ratio(shared_data):
    """The chunk-wide bound is what prepare uses to skip the exact test: it must never be below the exact
    ratio (or a repetitive document would slip through), and on real text it is equal."""
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:60_000]
    docs = [clean_text(p) for p in split_text(text.splitlines(keepends=True), "paragraph")]
    docs += ["", "short", "0123456789", "0123456789a", "buy now! " * 20, "好好学习，天天向上。" * 10, "😀" * 15]
    bounds = ngram_repeat_bounds(docs)
    exact = [repeated_ngram_ratio(d) for d in docs]
    assert bounds.tolist() == exact
    assert ngram_repeat_bounds([]).shape == (0,)


def test_quality_reason_reports_first_failure():
    assert quality_reason("", 1, 100) == "empty"
    assert quality_reason("#|#|#|#|", 1, 100, max_symbol_ratio=0.2) == "symbol_ratio"
    assert quality_reason("#|#|#|#|", 20, 100, max_symbol_ratio=0.2) == "too_short"
    assert quality_reason("A perfectly normal sentence about the weather today.") is None


def test_real_text_passes_the_default_filters(shared_data):
    """False positives on real prose and poetry must be rare: the filters target junk, not style."""
    shakespeare = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    paragraphs = [clean_text(p) for p in split_text(shakespeare.splitlines(keepends=True), "paragraph")]
    poems = ["\n".join(p["paragraphs"]) for p in json.loads(
        (shared_data / "chinese_poetry" / "quantangshi" / "poet.tang.0.json").read_text(encoding="utf-8"))]
    for docs in (paragraphs, [clean_text(p) for p in poems]):
        reasons = [quality_reason(d, min_chars=0) for d in docs if d]
        assert sum(r is not None for r in reasons) <= 0.01 * len(reasons), set(reasons)
    assert quality_reason(clean_text(shakespeare), max_chars=2_000_000) is None  # the play as one document
