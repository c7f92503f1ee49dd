"""POST /v1/feedback, `genforge feedback export` (SFT + preference data, manifest, lineage into
`genforge finetune sft`), and the Alembic migrations (a database of the serving core is upgraded)."""

import json
import sqlite3

import httpx
import openai
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from genforge.artifacts import read_manifest, sha256_file
from genforge.cli import app
from genforge.errors import ConfigError, DataError
from genforge.finetune.dpo import read_pairs
from genforge.finetune.sft import read_dialogues
from genforge.serve.config import FeedbackExportConfig
from genforge.serve.db import MIGRATIONS, Feedback, StoredResponse, connect
from genforge.serve.feedback import export
from genforge.serve.store import add_feedback


def _ask(client, text, user="ann"):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], max_tokens=4,
                                          temperature=0, user=user)


def test_feedback_is_stored_and_exported(serve_cfg, live, oai, tmp_path):
    cfg = serve_cfg()
    with live(cfg) as (url, state):
        client = oai(url)
        first = _ask(client, "What is 2+2?")
        streamed = list(client.chat.completions.create(model="tiny", stream=True, max_tokens=4, temperature=0,
                                                       messages=[{"role": "user", "content": "Name a colour"}]))
        second = _ask(client, "What is 2+2?", user="bob")
        post = lambda body: httpx.post(f"{url}/v1/feedback", json=body, timeout=30)  # noqa: E731
        r = post({"response_id": first.id, "thumbs": "down", "correction": "4", "comment": "wrong"})
        assert r.status_code == 200 and r.json()["response_id"] == first.id
        assert post({"response_id": streamed[0].id, "rating": 5}).status_code == 200  # a stream is stored before [DONE]
        assert post({"response_id": second.id, "thumbs": "up"}).status_code == 200
        unknown = post({"response_id": "chatcmpl-nope", "thumbs": "up"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
        for bad in ({"response_id": first.id}, {"response_id": first.id, "rating": 6},
                    {"response_id": first.id, "thumbs": "sideways"}, {"thumbs": "up"},
                    {"response_id": first.id, "correction": " \n "}, {"response_id": first.id, "choice": -1,
                                                                       "thumbs": "up"},
                    {"response_id": first.id, "rating": "5"}):
            assert post(bad).status_code == 400, bad
        assert httpx.post(f"{url}/v1/feedback", content=b"{", timeout=30).status_code == 400
        with Session(state.keys.engine) as s:
            rows = list(s.scalars(select(Feedback).order_by(Feedback.id)))
        assert [(f.thumbs, f.rating, f.positive) for f in rows] == [("down", None, False), (None, 5, True),
                                                                     ("up", None, True)]
        assert rows[0].correction == "4" and rows[0].comment == "wrong" and rows[0].caller == "anonymous"

    counts = export(FeedbackExportConfig(out=tmp_path / "fb", db=cfg.db))
    assert counts == {"responses": 3, "feedback": 3, "sft": 1, "preference": counts["preference"], "skipped": 0,
                      "blocked": 0}
    sft = [json.loads(line) for line in (tmp_path / "fb" / "sft.jsonl").read_text().splitlines()]
    assert sft == [{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}]
    prefs = [json.loads(line) for line in (tmp_path / "fb" / "preference.jsonl").read_text().splitlines()]
    assert {"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": "4",
            "rejected": first.choices[0].message.content} in prefs
    if second.choices[0].message.content != first.choices[0].message.content:  # greedy replies can coincide
        assert {"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": second.choices[0].message.content,
                "rejected": first.choices[0].message.content} in prefs
    assert read_dialogues(tmp_path / "fb" / "sft.jsonl")  # what `genforge finetune sft --data` reads
    manifest = read_manifest(tmp_path / "fb", stage="feedback.export")
    assert manifest["outputs"]["sft.jsonl"] == sha256_file(tmp_path / "fb" / "sft.jsonl")


def test_feedback_rates_one_choice_of_several(serve_cfg, live, oai, tmp_path):
    cfg = serve_cfg()
    with live(cfg) as (url, _):
        reply = oai(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say hi"}],
                                                 max_tokens=6, temperature=1.0, n=3, seed=7)
        texts = [c.message.content for c in reply.choices]
        assert len(set(texts)) == 3 and "hi" not in texts  # seeded: three different answers to tell apart
        post = lambda body: httpx.post(f"{url}/v1/feedback", json=body, timeout=30)  # noqa: E731
        assert post({"response_id": reply.id, "choice": 2, "thumbs": "up"}).status_code == 200
        assert post({"response_id": reply.id, "choice": 1, "thumbs": "down", "correction": "hi"}).status_code == 200
        assert post({"response_id": reply.id, "choice": 0, "thumbs": "up"}).status_code == 200
        assert post({"response_id": reply.id, "choice": 0, "thumbs": "down"}).status_code == 200  # the latest counts
        beyond = post({"response_id": reply.id, "choice": 3, "thumbs": "up"})
        assert beyond.status_code == 400 and beyond.json()["error"]["param"] == "choice"
        assert "has 3 choices" in beyond.json()["error"]["message"]
        assert post({"response_id": reply.id, "choice": -1, "thumbs": "up"}).status_code == 400
    export(FeedbackExportConfig(out=tmp_path / "fb", db=cfg.db))
    prompt = [{"role": "user", "content": "Say hi"}]
    prefs = [json.loads(line) for line in (tmp_path / "fb" / "preference.jsonl").read_text().splitlines()]
    assert {"prompt": prompt, "chosen": "hi", "rejected": texts[1]} in prefs  # the correction of choice 1
    assert {"prompt": prompt, "chosen": texts[2], "rejected": texts[1]} in prefs
    assert {"prompt": prompt, "chosen": texts[2], "rejected": texts[0]} in prefs  # choice 0 ended rated down
    assert all(p["chosen"] != texts[0] for p in prefs)


def test_finetuning_on_the_export_records_it_as_input(serve_cfg, live, oai, tmp_path, llama_dir):
    """The loop closes: a model fine-tuned on DIR/sft.jsonl (then DIR/preference.jsonl by DPO) names that file
    (and hash) in its manifest."""
    from genforge.finetune.config import DpoConfig, SftConfig
    from genforge.finetune.dpo import dpo
    from genforge.finetune.sft import sft

    cfg = serve_cfg()
    with live(cfg) as (url, _):
        client = oai(url)
        for i in range(4):
            reply = _ask(client, f"question {i}")
            httpx.post(f"{url}/v1/feedback", json={"response_id": reply.id, "correction": f"answer {i}"}, timeout=30)
    export(FeedbackExportConfig(out=tmp_path / "fb", db=cfg.db))
    data = tmp_path / "fb" / "sft.jsonl"
    run = sft(SftConfig(model=llama_dir, data=data, val_data=data, out=tmp_path / "sft", max_steps=1, batch_size=2,
                        seq_len=32, warmup_steps=0, eval_every=1, log_every=1, bf16=False))
    inputs = read_manifest(run)["inputs"]
    assert inputs[0] == {"path": str(data), "sha256": read_manifest(tmp_path / "fb")["outputs"]["sft.jsonl"]}
    pairs = tmp_path / "fb" / "preference.jsonl"  # each correction against the answer it corrects
    tuned = dpo(DpoConfig(model=run, data=pairs, val_data=pairs, out=tmp_path / "dpo", max_steps=1, batch_size=2,
                          seq_len=32, warmup_steps=0, eval_every=1, log_every=1, bf16=False))
    manifest = read_manifest(tuned)
    assert manifest["inputs"][0]["sha256"] == read_manifest(tmp_path / "fb")["outputs"]["preference.jsonl"]
    assert manifest["parent"]["stage"] == "finetune" and manifest["metrics"]["train_pairs"] == 4


def test_a_database_of_the_serving_core_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the core's create_all schema, with a key in it
        db.execute("CREATE TABLE api_keys (id INTEGER PRIMARY KEY, name VARCHAR(200) UNIQUE NOT NULL, prefix "
                   "VARCHAR(16) NOT NULL, digest VARCHAR(64) NOT NULL, rate_limit INTEGER, created DATETIME NOT "
                   "NULL, revoked DATETIME)")
        db.execute("INSERT INTO api_keys VALUES (1, 'alice', 'gf-abc', 'd', NULL, '2026-01-01 00:00:00', NULL)")
    engine = connect(f"sqlite:///{path}")
    assert {"responses", "feedback", "ab_weights", "audit", "alembic_version"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        versions = {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
        assert versions == set(ScriptDirectory(str(MIGRATIONS)).get_heads())  # 0002 and the branch of each app
        assert conn.exec_driver_sql("SELECT name FROM api_keys").scalar() == "alice"
    with Session(connect(f"sqlite:///{path}")) as s:  # connecting again is a no-op
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def test_feedback_of_a_0002_database_keeps_its_rows_and_rates_the_first_choice(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with create_engine(url).begin() as conn:  # a database of the release before choices were rated
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql("INSERT INTO responses (id, created, route, model, variant, caller, request, response, "
                             "finish, status, prompt_tokens, completion_tokens, latency) VALUES ('r1', "
                             "'2026-01-01 00:00:00', 'chat', 'tiny', 'tiny', 't', '{\"messages\": []}', "
                             "'[\"a\", \"b\"]', '[\"stop\"]', 200, 1, 1, 0.1)")
        conn.exec_driver_sql("INSERT INTO feedback (response_id, created, thumbs, positive, caller) VALUES "
                             "('r1', '2026-01-01 00:00:00', 'up', 1, 't')")
    with Session(connect(url)) as s:
        assert [(f.response_id, f.choice, f.thumbs) for f in s.scalars(select(Feedback))] == [("r1", 0, "up")]


def test_no_store_takes_no_feedback(serve_cfg, live, oai):
    with live(serve_cfg(store=False)) as (url, _):
        reply = _ask(oai(url), "hi")
        r = httpx.post(f"{url}/v1/feedback", json={"response_id": reply.id, "thumbs": "up"}, timeout=30)
        assert r.status_code == 400 and "--no-store" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/ui/config", timeout=30).json()["feedback"] is False  # the chat page hides 👍/👎
        with pytest.raises(openai.BadRequestError):
            oai(url).chat.completions.create(model="tiny", messages=[], max_tokens=2)


def test_a_corrupt_stored_response_is_one_error_and_keeps_the_earlier_export(tmp_path):
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    out = tmp_path / "fb"
    connect(db)
    export(FeedbackExportConfig(out=out, db=db))
    finished = read_manifest(out, stage="feedback.export")
    with Session(connect(db)) as s, s.begin():
        s.add(StoredResponse(id="chatcmpl-bad", route="chat", model="tiny", variant="v", caller="ann",
                             request="{not json", response='["hi"]', finish="stop", status=200, prompt_tokens=1,
                             completion_tokens=1, latency=0.1))
        s.flush()  # the response row first: the feedback's foreign key names it
        s.add(Feedback(response_id="chatcmpl-bad", caller="ann", correction="hello"))
    with pytest.raises(DataError, match="stored response chatcmpl-bad in the database is corrupt"):
        export(FeedbackExportConfig(out=out, db=db))
    assert read_manifest(out, stage="feedback.export") == finished


def _stored(db: str, rid: str, request: dict, answer: str = "hi") -> None:
    with Session(connect(db)) as s, s.begin():
        s.add(StoredResponse(id=rid, route="chat", model="tiny", variant="v", caller="ann", request=json.dumps(request),
                             response=json.dumps([answer]), finish="stop", status=200, prompt_tokens=1,
                             completion_tokens=1, latency=0.1))


def test_a_negative_choice_is_refused_not_the_last_answer(tmp_path):
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    _stored(db, "r1", {"messages": [{"role": "user", "content": "q"}]})
    with pytest.raises(ConfigError, match="choice must be 0 to 0"):
        add_feedback(connect(db), "r1", "ann", choice=-1, thumbs="up")


def test_export_skips_requests_that_are_no_chat(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    requests = {"ok": {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "q"}]},
                "broken": {"messages": [{"role": "user"}, 5]},
                "no-user": {"messages": [{"role": "assistant", "content": "a"}]}}
    for rid, request in requests.items():
        _stored(db, rid, request)
        add_feedback(connect(db), rid, "ann", thumbs="down", correction="better")
    counts = export(FeedbackExportConfig(out=tmp_path / "fb", db=db))
    assert (counts["sft"], counts["preference"], counts["skipped"]) == (1, 1, 2)
    assert "skipped 2 responses whose request is no valid chat" in capsys.readouterr().out
    assert read_dialogues(tmp_path / "fb" / "sft.jsonl") == [[{"role": "system", "content": "be brief"},
                                                              {"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "better"}]]
    assert read_pairs(tmp_path / "fb" / "preference.jsonl")  # what `genforge finetune dpo --data` reads


def test_a_database_of_a_newer_genforge_is_a_one_line_error(tmp_path):
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    with connect(db).begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('9999')")  # a revision of a later release
    result = CliRunner().invoke(app, ["feedback", "export", "--db", db, "--out", str(tmp_path / "fb")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: the database") and "revision 9999, newer than this genforge" in result.output
    with pytest.raises(ConfigError, match="newer than this genforge"):
        connect(db)


@pytest.mark.parametrize("command", [["feedback", "export", "--out", "OUT"], ["ab", "report"], ["ab", "promote", "lora"],
                                     ["keys", "list"], ["keys", "revoke", "alice"]])
def test_commands_on_a_recorded_database_refuse_a_missing_one(tmp_path, command):
    missing = tmp_path / "nowhere" / "x.db"
    args = [str(tmp_path / "fb") if a == "OUT" else a for a in command]
    result = CliRunner().invoke(app, [*args, "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 2 and result.output == f"error: database {missing} does not exist (check --db or " \
                                                      "$GENFORGE_DB_URL)\n"
    assert not missing.parent.exists() and not (tmp_path / "fb").exists()
