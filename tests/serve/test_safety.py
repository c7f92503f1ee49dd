"""Moderation: evasion-proof blocklists (English, Chinese), policies per route, PII redaction of outputs
(streams included), a classifier as moderation model, and the audit table."""

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.db import Audit, StoredResponse
from genforge.serve.safety import OutputGuard, Safety, normalise, parse_policies

TERMS = ["kill", "bad word", "炸弹"]


@pytest.mark.parametrize("text", ["kill", "KILL them", "k i l l", "k.i.l.l", "ｋｉｌｌ", "кill", "k\u200bi\u2060ll",
                                  "a BAD-word", "bad  word", "badword", "做个炸弹", "做个炸 弹", "做个炸\u200b弹"])
def test_evasions_are_caught(text):
    assert Safety(TERMS).filter("chat", text, "input").action == "block"


@pytest.mark.parametrize("text", ["skill", "killer whale", "bad words", "炸鸡", "hello"])
def test_innocent_text_passes(text):
    assert Safety(TERMS, redact_pii=False).filter("chat", text, "output").action == "allow"


def test_normalise_keeps_positions_and_redact_replaces_in_place():
    norm, where = normalise("Ａ\u200bb")
    assert norm == "ab" and where == [0, 2]
    d = Safety(TERMS, {"chat": "redact", "completions": "flag"}).filter("chat", "I will ｋ i l l you", "input")
    assert d.action == "redact" and d.text == "I will *** you" and d.reasons == ["blocklist:kill"]  # the term
    flagged = Safety(TERMS, {"chat": "block", "completions": "flag"}).filter("completions", "kill", "input")
    assert flagged.action == "flag" and flagged.text == "kill"


def test_pii_is_redacted_in_outputs_even_when_streamed():
    safety = Safety()
    text = "Write to john.doe@example.com or call +1 415 555 2671 today."
    assert safety.filter("chat", text, "output").text == "Write to <EMAIL> or call <PHONE> today."
    assert safety.filter("chat", text, "input").text == text  # inputs are not scrubbed
    guard, sent = OutputGuard(safety, "chat"), []
    for i in range(0, len(text), 3):
        sent.append(guard.push(text[i:i + 3]))
        assert "john" not in "".join(sent) and "415" not in "".join(sent)  # never released before it is judged
    final = guard.finish()
    assert "".join(sent) + final.text == "Write to <EMAIL> or call <PHONE> today."
    assert final.reasons == ["pii:EMAIL", "pii:PHONE"] and final.action == "redact"


def test_policy_flags_are_checked():
    assert parse_policies(["*=flag", "chat=redact"]) == {"chat": "redact", "completions": "flag"}
    for bad in ("chat", "chat=delete", "embeddings=block"):
        with pytest.raises(ConfigError, match="--policy"):
            parse_policies([bad])


def _audit(engine):
    with Session(engine) as s:
        return [(a.stage, a.action, json.loads(a.reasons), a.review) for a in s.scalars(select(Audit).order_by(Audit.id))]


def test_server_blocks_redacts_and_audits(serve_cfg, live, oai, tmp_path):
    lists = tmp_path / "en.txt"
    lists.write_text("# terms\nkill\n", encoding="utf-8")
    (tmp_path / "zh.txt").write_text("炸弹\n", encoding="utf-8")
    cfg = serve_cfg(blocklist=[lists, tmp_path / "zh.txt"], policy=["completions=redact"])
    with live(cfg) as (url, state):
        client = oai(url)
        blocked = client.chat.completions.create(model="tiny", max_tokens=5,
                                                 messages=[{"role": "user", "content": "how to make a 炸 弹"}])
        assert blocked.choices[0].message.content == cfg.refusal
        assert blocked.choices[0].finish_reason == "content_filter"
        stream = list(client.chat.completions.create(model="tiny", max_tokens=5, stream=True,
                                                     messages=[{"role": "user", "content": "K I L L"}]))
        assert "".join(c.choices[0].delta.content or "" for c in stream) == cfg.refusal
        redacted = client.completions.create(model="tiny", prompt="please kill the process", max_tokens=3)
        assert redacted.choices[0].finish_reason in ("stop", "length")
        fine = client.chat.completions.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert fine.choices[0].finish_reason in ("stop", "length")
        with Session(state.keys.engine) as s:
            stored = s.get(StoredResponse, redacted.id)
            assert stored.request.count("***") == 1 and "kill" not in stored.request
        audit = _audit(state.keys.engine)
    assert audit[0] == ("input", "block", ["blocklist:炸弹"], None)  # the blocklist's term, not the text that hit
    assert audit[1] == ("input", "block", ["blocklist:kill"], None)
    assert audit[2] == ("input", "redact", ["blocklist:kill"], None)
    assert [a[:2] for a in audit[3:]] == [("output", "allow"), ("input", "allow"), ("output", "allow")]


def test_classifier_moderation_and_flag_for_review(serve_cfg, live, oai, classifier_dir):
    from genforge.finetune.classifier import load_classifier, predict_probs

    model, tok, info = load_classifier(classifier_dir)
    texts = ["good news 1", "bad news 2"]
    neg = predict_probs(model, tok, texts, seq_len=info["seq_len"], multi_label=False)[:, info["labels"].index("negative")]
    threshold = float(neg.mean())  # between the two texts' scores: one is unsafe, the other not
    unsafe, safe = (texts[1], texts[0]) if neg[1] > neg[0] else (texts[0], texts[1])
    with pytest.raises(ConfigError, match="moderation-labels"):
        from genforge.serve.safety import load_moderator

        load_moderator(classifier_dir, ["toxic"], 0.5)
    cfg = serve_cfg(moderation_model=classifier_dir, moderation_labels=["negative"], moderation_threshold=threshold,
                    policy=["chat=flag"], redact_pii=False)
    with live(cfg) as (url, state):
        client = oai(url)
        for text in (unsafe, safe):
            r = client.chat.completions.create(model="tiny", max_tokens=3, messages=[{"role": "user", "content": text}])
            assert r.choices[0].message.content != cfg.refusal  # flag: answered, marked for review
        audit = _audit(state.keys.engine)
    inputs = [a for a in audit if a[0] == "input"]
    assert inputs[0][1] == "flag" and inputs[0][2][0].startswith("classifier:negative=") and inputs[0][3] == "pending"
    assert inputs[1][1] == "allow"


def test_a_blocked_output_is_refused_and_never_streamed(serve_cfg, live, oai, tmp_path):
    """Block a word the model is known to say: the whole reply is refused, the stream stops before it."""
    import re

    ask = {"model": "tiny", "prompt": "Once", "max_tokens": 40, "temperature": 0, "extra_body": {"ignore_eos": True}}
    with live(serve_cfg(redact_pii=False)) as (url, _):
        said = oai(url).completions.create(**ask).choices[0].text
    found = re.findall(r"(?<![^\W\d_])[^\W\d_]{2,}(?![^\W\d_])", said.lower())
    words = [w for w in found if w.isascii() and found.count(w) == 1]
    assert words, f"the random model should say some word once: {said!r}"
    word = words[len(words) // 2]
    (tmp_path / "terms.txt").write_text(word + "\n", encoding="utf-8")
    with live(serve_cfg(blocklist=[tmp_path / "terms.txt"], redact_pii=False)) as (url, state):
        whole = oai(url).completions.create(**ask).choices[0]
        assert (whole.text, whole.finish_reason) == (state.cfg.refusal, "content_filter")
        chunks = list(oai(url).completions.create(**ask, stream=True))
        streamed = "".join(c.choices[0].text for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        assert word not in streamed.lower() and said.startswith(streamed)
        audit = _audit(state.keys.engine)
    outputs = [a[:2] for a in audit if a[0] == "output"]
    assert outputs == [("output", "block")] * 2
    assert all(len(a[2]) == 1 and a[2][0].lower() == f"blocklist:{word}" for a in audit if a[0] == "output")


def test_text_without_spaces_streams_before_it_ends():
    """Chinese (or any unspaced text) must not wait for a space that never comes; a blocked term is still
    never released, however it is split."""
    safety = Safety(["炸弹"])
    text = "这是一个很长的回答没有任何空格" * 12 + "炸弹" + "后面还有很多文字" * 3
    guard, sent = OutputGuard(safety, "chat"), []
    for i in range(0, len(text), 2):
        sent.append(guard.push(text[i:i + 2]))
        if i == 150:
            assert len("".join(sent)) >= 150 - 64  # released while the text is still growing
    final = guard.finish()
    assert final.action == "block" and "炸弹" not in "".join(sent)
