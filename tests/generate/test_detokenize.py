"""Streaming detokenisation through byte-level tokens, and stop strings over streamed text."""

import pytest

from genforge.generate.detokenize import REPLACEMENT, TextStream, decode
from genforge.generate.stopping import find_stop, partial_stop

TEXTS = ["春眠不觉晓，处处闻啼鸟。", "Party time 🎉🎊 with 👩‍👩‍👧 family!", "mixed: naïve café — 東京 🚀 done"]


def pieces_of(tokenizer, text, stops=()):
    ids = tokenizer(text)["input_ids"]
    stream = TextStream(tokenizer, stops)
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.flush())
    return ids, pieces, stream


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_are_whole_characters_and_add_up_to_the_text(tokenizer, text):
    ids, pieces, stream = pieces_of(tokenizer, text)
    # the test means something only if characters really are split over tokens
    assert any(REPLACEMENT in tokenizer.decode([i]) for i in ids)
    assert "".join(pieces) == text == stream.released == decode(tokenizer, ids)
    assert not any(REPLACEMENT in p for p in pieces)


def test_special_tokens_are_not_printed(tokenizer):
    ids = tokenizer("hello")["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_start|>")]
    stream = TextStream(tokenizer)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "hello"


@pytest.mark.parametrize("text, stop, expected", [
    ("Hello world. Bye", ["."], "Hello world"),
    ("春眠不觉晓，处处闻啼鸟。", ["处处"], "春眠不觉晓，"),
    ("abc ### def ###", ["###", "zz"], "abc "),
    ("no stop here", ["###"], "no stop here"),
    ("ends with a partial #", ["##"], "ends with a partial #"),
])
def test_stop_strings_cut_the_text_and_are_never_released(tokenizer, text, stop, expected):
    _, pieces, stream = pieces_of(tokenizer, text, stop)
    assert "".join(pieces) == expected == stream.released
    assert stream.stopped == (expected != text)


def test_text_that_may_start_a_stop_string_is_held_back(tokenizer):
    stream = TextStream(tokenizer, ["\n\nUser:"])
    out = "".join(stream.push(i) for i in tokenizer("Sure.\n\nUs")["input_ids"])
    assert out == "Sure."  # "\n\nUs" might become the stop string
    out += "".join(stream.push(i) for i in tokenizer("ually not")["input_ids"])
    assert out == "Sure.\n\nUsually not" and not stream.stopped


def test_find_stop_and_partial_stop():
    assert find_stop("a<end>b<stop>", ["<stop>", "<end>"]) == 1
    assert find_stop("a<end>b", ["<end>"], start=2) is None
    assert partial_stop("text <en", ["<end>", "<e"]) == 3
    assert partial_stop("text", ["<end>"]) == 0
    assert partial_stop("x<end", ["<end>"]) == 4


def test_invalid_bytes_stream_at_once_and_only_the_trailing_one_waits(tokenizer):
    """An untrained model may emit bytes that never form a character: the stream must not hold its whole
    answer back (it did, and one request's first text came only with its last token)."""
    lone = [i for i in range(len(tokenizer)) if tokenizer.decode([i]) == REPLACEMENT][:2]
    word = tokenizer("hello")["input_ids"]
    ids = [lone[0]] * 5 + word + [lone[1]] * 2
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    assert pieces[0] == "" and pieces[1] != ""  # the first U+FFFD is final once a second byte follows
    pieces.append(stream.flush())
    assert "".join(pieces) == decode(tokenizer, ids)
    assert sum(p.count(REPLACEMENT) for p in pieces[:5]) == 4
