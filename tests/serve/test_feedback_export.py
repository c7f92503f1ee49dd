"""`genforge feedback export` builds training data a next model should learn from: every pair once, nothing a
safety filter blocked, no personal data the server itself hides."""

import json
import uuid

import pytest

from genforge.errors import ConfigError
from genforge.serve.config import FeedbackExportConfig
from genforge.serve.db import connect
from genforge.serve.feedback import export
from genforge.serve.keys import create_key
from genforge.serve.store import Record, add_feedback, save

PROMPT = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    return url, connect(url)


def answer(engine, texts, messages=PROMPT, finish=None):
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    save(engine, Record(id=rid, route="chat", model="chat", variant="chat", weights_id=None, user=None, caller="k",
                        request={"messages": messages, "params": {}}, texts=texts,
                        finish=finish or ["stop"] * len(texts), status=200, prompt_tokens=3, completion_tokens=3,
                        latency=1.0, ttft=0.1))
    return rid


def exported(url, out, **kw):
    counts = export(FeedbackExportConfig(db=url, out=out, **kw))
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return counts, read("sft.jsonl"), [(p["chosen"], p["rejected"]) for p in read("preference.jsonl")]


def test_every_pair_once_whichever_feedback_made_it(db, tmp_path):
    url, engine = db
    add_feedback(engine, answer(engine, ["5"]), "k", thumbs="down", correction="4")
    add_feedback(engine, answer(engine, ["22"]), "k", thumbs="down", correction="4")  # the same correction
    add_feedback(engine, answer(engine, ["4"]), "k", thumbs="up")  # ratings make ("4", "5") again
    counts, sft, pairs = exported(url, tmp_path / "fb")
    assert len(sft) == 1
    assert sorted(pairs) == [("4", "22"), ("4", "5")] and counts["preference"] == 2


def test_answers_the_safety_filters_blocked_are_left_out(db, tmp_path):
    url, engine = db
    refusal = "Sorry, I can't help with that."
    add_feedback(engine, answer(engine, [refusal], finish=["content_filter"]), "k", thumbs="down",
                 correction="Step 1: get explosives")
    rid = answer(engine, ["fine", refusal], finish=["stop", "content_filter"])  # n = 2, one choice blocked
    add_feedback(engine, rid, "k", thumbs="up", choice=0)
    add_feedback(engine, rid, "k", thumbs="down", choice=1, correction="Step 1")
    counts, sft, pairs = exported(url, tmp_path / "fb")
    assert sft == [] and pairs == [] and counts["blocked"] == 2


def test_personal_data_in_prompts_and_corrections_is_scrubbed(db, tmp_path):
    url, engine = db
    ask = [{"role": "user", "content": "How do I reach the CEO? I am bob@example.org"}]
    add_feedback(engine, answer(engine, ["Write to <EMAIL>"], messages=ask), "k", thumbs="down",
                 correction="Write to ceo.private@acme-corp.com")
    counts, sft, pairs = exported(url, tmp_path / "fb")
    assert sft[0]["messages"][0]["content"] == "How do I reach the CEO? I am <EMAIL>"
    assert sft[0]["messages"][1]["content"] == "Write to <EMAIL>"
    assert pairs == []  # scrubbed, the correction equals the answer it corrects
    _, sft, pairs = exported(url, tmp_path / "raw", pii=False)
    assert sft[0]["messages"][1]["content"] == "Write to ceo.private@acme-corp.com"
    assert pairs == [("Write to ceo.private@acme-corp.com", "Write to <EMAIL>")]


def test_the_callers_names_are_not_key_names(db):
    _, engine = db
    for name in ("static", " anonymous "):
        with pytest.raises(ConfigError, match="is reserved"):
            create_key(engine, name)


def test_a_model_name_the_database_never_served_is_an_error_not_an_empty_export(db, tmp_path):
    url, engine = db
    add_feedback(engine, answer(engine, ["5"]), "k", thumbs="down", correction="4")
    with pytest.raises(ConfigError, match=r"no stored responses to model 'caht' in the database \(models: chat\)"):
        export(FeedbackExportConfig(db=url, out=tmp_path / "fb", model="caht"))
    assert not (tmp_path / "fb").exists()
    assert exported(url, tmp_path / "fb", model="chat")[0]["sft"] == 1
