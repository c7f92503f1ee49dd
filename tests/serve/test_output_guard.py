"""The output guard of streams: however a text is split into pieces, what it releases (and its final
flush) is what the non-streamed filter makes of the whole text, and a blocked text is cut with nothing of
a blocked term sent. Also the `logprobs` parameter, which genforge does not implement."""

import random

import pytest

from genforge.serve.errors import ApiError
from genforge.serve.safety import OutputGuard, Safety, normalise
from genforge.serve.schemas import ChatRequest, CompletionRequest

TERMS = ["kill", "bad word", "炸弹", "bomb"]
WORDS = ["hello", "mail", "me", "at", "bob@example.com", "a.very.long.local.part.of.an.address.indeed@mail.example.org",
         "call", "415-555-2671", "(415) 555-2671", "+1 415 555 2671", "+86 138 0013 8000", "手机13800138000联系",
         "card", "4111 1111 1111 1111", "11010519491231002X", "ip", "192.168.1.1", "fe80::1", "v1.2.3.4", "1.2.3.4.5",
         "kill", "killer", "skill", "k i l l", "k.i.l.l", "ｋｉｌｌ", "кill", "k\u200bill", "bad", "word", "bad-word",
         "炸弹", "炸 弹", "炸\u200b弹", "炸鸡", "bomb", "bombs", "的" * 30, "a" * 40, "then", "done.", "ok,", "\n", "12345",
         "2024", "(", ")", "-", "@", ":", "...", "“quoted”", "VIRGILIA" * 12, "x" * 64 + "@example.com",
         "y" * 65 + "@example.com", "a.b" * 30, "GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00",
         "NL91ABNA0417164300", "BE68 5390 0754 7034 BANK", "IBAN", "EUR", "A B C D"]


def split(text: str, rng: random.Random) -> list[str]:
    """`text` in pieces of random lengths (1 to 8 characters, sometimes a single piece, sometimes empty ones)."""
    if rng.random() < 0.05:
        return [text]
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(0 if rng.random() < 0.05 else 1, 8)
        pieces.append(text[i:i + n])
        i += n
    return pieces


def stream(safety: Safety, pieces: list[str]) -> tuple[str, str]:
    """(what a stream sends, its finish: "stop" or "content_filter")."""
    guard = OutputGuard(safety, "chat")
    sent = "".join(guard.push(p) for p in pieces)
    final = guard.finish()
    return sent + final.text, "content_filter" if guard.blocked else "stop"


def check(safety: Safety, text: str, pieces: list[str]) -> None:
    assert "".join(pieces) == text
    sent, finish = stream(safety, pieces)
    whole = safety.filter("chat", text, "output")
    if whole.action != "block":
        assert (sent, finish) == (whole.text, "stop"), pieces
        return
    assert finish == "content_filter", pieces
    # cut before the first hit: what was sent is some of the (PII-filtered) text before it, nothing of a term
    first = min(start for start, _, _ in safety._hits(text))
    plain = Safety(redact_pii=safety.redact_pii)
    assert plain.filter("chat", text[:first], "output").text.startswith(sent), pieces
    assert plain.filter("chat", text, "output").text.startswith(sent), pieces


@pytest.mark.parametrize("policy", ["block", "redact", "flag"])
@pytest.mark.parametrize("redact_pii", [True, False])
def test_any_split_streams_what_the_whole_text_filters_to(policy, redact_pii):
    rng = random.Random(f"{policy}{redact_pii}")
    safety = Safety(TERMS, dict.fromkeys(("chat", "completions"), policy), redact_pii=redact_pii)
    for _ in range(1500):
        text = rng.choice(["", " ", "\n", ", "]).join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
        check(safety, text, split(text, rng))


def test_any_split_streams_pii_as_the_whole_text_does():
    """The default server (PII redaction, no blocklist), with texts glued without spaces too."""
    rng, safety = random.Random(7), Safety()
    for _ in range(3000):
        text = "".join(rng.choice(WORDS) + rng.choice(["", " ", " ", "\n", ".", "-"]) for _ in range(rng.randint(1, 10)))
        check(safety, text, split(text, rng))


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_a_phone_number_split_anywhere_is_redacted(size):
    """The auditor's case: held back for 64 characters at most, a half-seen number went out unredacted."""
    safety = Safety()
    text = "Call me at 415-555-2671 and I will tell you all about the weather in the city this week."
    assert safety.filter("chat", text, "output").text == "Call me at <PHONE> and I will tell you all about the " \
                                                         "weather in the city this week."
    check(safety, text, [text[i:i + size] for i in range(0, len(text), size)])
    long = "write to " + "x" * 64 + "@example.com now"  # the longest local part an e-mail may have
    check(safety, long, [long[i:i + size] for i in range(0, len(long), size)])


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_terms_are_neither_split_nor_misjudged(size):
    block = Safety(["kill"], redact_pii=False)
    text = "killer 鲸是海洋中的顶级掠食者"  # no hit: "kill" must not be judged before "er" arrives
    check(block, text, [text[i:i + size] for i in range(0, len(text), size)])
    assert stream(block, [text[i:i + size] for i in range(0, len(text), size)]) == (text, "stop")
    redact = Safety(["bomb", "炸弹"], {"chat": "redact", "completions": "redact"}, redact_pii=False)
    for text in ["我不知道炸弹是什么东西，也不想知道。", "炸弹的的的的的的的的的的的的的", "a bomb的的的的的的的的的的的的",
                 "炸" + " " * 200 + "弹 is one hit"]:
        check(redact, text, [text[i:i + size] for i in range(0, len(text), size)])
    assert stream(redact, list("我不知道炸弹是什么"))[0] == "我不知道***是什么"


def test_placeholders_do_not_shift_what_follows():
    """A placeholder longer or shorter than what it replaced: later text is not cut by the old length."""
    safety = Safety(["炸弹"], {"chat": "redact", "completions": "redact"})
    for text in ["联系 a@b.co 或 13800138000，别做炸弹，然后 +1 415 555 2671 结束", "电话13800138000炸弹" + "的" * 80]:
        for size in range(1, 9):
            check(safety, text, [text[i:i + size] for i in range(0, len(text), size)])


def test_a_lower_case_of_two_characters_keeps_positions():
    """"İ" lower-cases to two characters: each must keep its position, or a hit after it is misplaced."""
    safety = Safety(["kill"], {"chat": "redact", "completions": "redact"}, redact_pii=False)
    assert normalise("İx") == ("i\u0307x", [0, 0, 1])
    assert safety.filter("chat", "İstanbul kill", "output").text == "İstanbul ***"
    check(safety, "İİ kill İ", list("İİ kill İ"))


@pytest.mark.parametrize("redact_pii", [True, False])
def test_filtering_from_a_later_cut_keeps_what_came_before_in_view(redact_pii):
    """The guard filters from its last separating cut, not the whole text: "的kill" is still no hit (a
    letter precedes the term), "的，kill" is one."""
    safety = Safety(["kill"], {"chat": "redact", "completions": "redact"}, redact_pii=redact_pii)
    text = "的的的kill的\u200bkill 也，kill，好的" * 3
    for size in range(1, 6):
        check(safety, text, [text[i:i + size] for i in range(0, len(text), size)])
    assert stream(safety, list(text))[0].count("***") == 3


def test_a_long_word_without_spaces_streams_once_it_is_65_characters_long():
    """The random-weights model's VIRGILIAVIRGILIA...: held until no e-mail can start in it (its local part
    is at most 64 characters), not to its end; a digit, "@" or ":" in the run, or a redacting blocklist,
    makes it wait whole."""
    text = "Hello " + "VIRGILIA" * 20
    guard = OutputGuard(Safety(), "chat")
    sent = [guard.push(text[i:i + 4]) for i in range(0, len(text), 4)]
    assert sent[:2] == ["", "Hello "] and sent[2:17] == [""] * 15  # each could still be an e-mail
    assert "".join(sent[:18]) == text[:72] and "".join(sent) == text and guard.finish().text == ""
    for held in ["Hello " + "VIRGILIA7" + "VIRGILIA" * 20, "Hello " + "VIRGILIA" * 20]:
        redacting = Safety(["kill"], {"chat": "redact", "completions": "redact"})
        for safety in ([Safety()] if "7" in held else []) + [redacting]:
            guard = OutputGuard(safety, "chat")
            assert "".join(guard.push(held[i:i + 4]) for i in range(0, len(held), 4)) == "Hello "


def test_a_redacted_term_in_a_run_does_not_unsettle_its_cuts():
    """A term's *** lets an e-mail start where the generated text had a letter before it: cut inside the run,
    the stream would have sent the start of the address."""
    safety = Safety(["微信vx"], {"chat": "redact", "completions": "redact"})
    text = "加微信vx" + "y" * 63 + "@ex.com 谢谢"
    assert safety.filter("chat", text, "output").text == "加***<EMAIL> 谢谢"
    check(safety, text, list(text))


def test_chinese_and_plain_words_still_stream_while_the_text_grows():
    safety = Safety(["炸弹"])
    guard = OutputGuard(safety, "chat")
    assert guard.push("这是一个很长的回答") == "这是一个很长的回答"  # nothing in it can still become a hit
    assert guard.push("炸") == "" and guard.push("鸡好吃") == "炸鸡好吃"
    guard = OutputGuard(safety, "chat")
    assert guard.push("Hello there, how are you") == "Hello there, how are "  # "you" could start an e-mail


@pytest.mark.parametrize("value", [0, 1, 5, True])
def test_logprobs_asked_for_are_refused(value):
    """`logprobs: 0` on /v1/completions asks for the sampled tokens' log-probabilities: refused like 1."""
    with pytest.raises(ApiError) as e:
        CompletionRequest(model="m", prompt="x", logprobs=value).refuse_unsupported()
    assert (e.value.status, e.value.param, e.value.code) == (400, "logprobs", "unsupported_parameter")


def test_neutral_values_of_unsupported_parameters_are_accepted():
    CompletionRequest(model="m", prompt="x", logprobs=False, echo=False, frequency_penalty=0, best_of=1,
                      presence_penalty=0).refuse_unsupported()
    ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], logprobs=False,
                top_logprobs=0).refuse_unsupported()
    with pytest.raises(ApiError):
        ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], logprobs=0).refuse_unsupported()
