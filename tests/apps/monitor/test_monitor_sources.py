"""Ingest from each file source: dedup (counted, not re-classified), JSONL tail with partial lines and
restarts, a folder with new files, a batch that fails leaving no trace, and PostgreSQL by URL."""

import json
import os
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from genforge.apps.monitor.ingest import Item, Monitor, normalise, parse_item, read_offset
from genforge.apps.monitor.rules import RuleSet
from genforge.apps.monitor.run import drain
from genforge.apps.monitor.sources import FolderWatch, JsonlTail, open_sources
from genforge.apps.monitor.tables import MonitorItem, MonitorText
from genforge.cli import app
from genforge.errors import DataError


def counts(engine):
    with Session(engine) as s:
        return (s.scalar(select(func.count()).select_from(MonitorItem)),
                s.scalar(select(func.count()).select_from(MonitorText)),
                s.scalar(select(func.count()).where(MonitorItem.duplicate.is_(True))))


def lines(path, records, partial=""):
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write(partial)


def test_duplicates_are_counted_not_reclassified(engine, loaded_model):
    monitor = Monitor(engine, loaded_model, batch_size=4)
    items = [Item("Shares JUMP after record profit https://t.co/a", 100, "a"),
             Item("shares jump   after record profit https://bit.ly/b", 200, "b", entity="ACME"),
             Item("Bank cuts jobs", 300, "a")]
    assert normalise(items[0].text) == normalise(items[1].text)
    assert monitor.ingest(items) == {"items": 3, "classified": 2, "duplicates": 1, "repeated": 0}
    assert monitor.ingest([Item("bank cuts JOBS", 400, "c")])["classified"] == 0
    assert counts(engine) == (4, 2, 2)
    with Session(engine) as s:
        seen = dict(s.execute(select(MonitorText.text, MonitorText.seen)).all())
        labels = {i.t: (i.sentiment, i.topic, i.duplicate) for i in s.scalars(select(MonitorItem))}
    assert sorted(seen.values()) == [2, 2]
    assert labels[100][:2] == labels[200][:2] and labels[300][:2] == labels[400][:2]  # same text, same labels
    assert [labels[t][2] for t in (100, 200, 300, 400)] == [False, True, False, True]


def test_items_with_ids_are_idempotent_and_bad_items_named(engine, loaded_model):
    monitor = Monitor(engine, loaded_model)
    batch = [Item("fed holds rates", 10, "wire", ext_id="1"), Item("fed holds rates", 10, "wire", ext_id="1")]
    assert monitor.ingest(batch)["items"] == 1
    assert monitor.ingest(batch[:1])["repeated"] == 1
    assert counts(engine)[0] == 1
    item = parse_item({"text": "x", "timestamp": "2026-01-02T03:04:05Z", "ticker": "aapl"}, "s", 0, "here")
    assert (item.t, item.entity) == (1767323045, "AAPL")
    with pytest.raises(DataError, match="items\\[3\\]: bad timestamp"):
        parse_item({"text": "x", "ts": "yesterday"}, "s", 0, "items[3]")
    with pytest.raises(DataError, match="non-empty string"):
        parse_item({"text": " "}, "s", 0, "here")
    assert parse_item({"text": "x", "entity": 700, "id": 12}, "s", 0, "here").entity == "700"
    for bad in ({"entity": {"name": "AAPL"}}, {"ticker": ["AAPL"]}, {"id": True}, {"source": {"x": 1}}):
        with pytest.raises(DataError, match="here: '(entity|id|source)' must be a string or a number"):
            parse_item({"text": "x", **bad}, "s", 0, "here")


def test_jsonl_tail_waits_for_partial_lines_and_resumes_after_restart(tmp_path, engine, loaded_model):
    path = tmp_path / "news.jsonl"
    lines(path, [{"text": f"news number {i}", "ts": 1000 + i, "entity": "ACME"} for i in range(5)],
          partial='{"text": "half wri')
    first = Monitor(engine, loaded_model, chunk=2)
    stats = drain(first, [JsonlTail(path)], RuleSet())
    assert stats["items"] == 5 and counts(engine)[0] == 5
    with open(path, "a", encoding="utf-8") as f:
        f.write('tten", "ts": 2000}\nnot json\n\n')
    lines(path, [{"text": "news number 7", "ts": 2001}])
    restarted = Monitor(engine, loaded_model, chunk=2)  # a new process: only the database carries over
    assert drain(restarted, [JsonlTail(path)], RuleSet())["items"] == 2  # the bad line is skipped
    assert drain(restarted, [JsonlTail(path)], RuleSet())["items"] == 0
    assert read_offset(engine, JsonlTail(path).stream) == path.stat().st_size
    with Session(engine) as s:
        assert sorted(s.scalars(select(MonitorItem.t))) == [1000, 1001, 1002, 1003, 1004, 2000, 2001]


def test_a_failed_batch_leaves_neither_items_nor_offset(tmp_path, engine, loaded_model):
    """A crash between reading and committing must neither lose the batch nor count it twice."""
    path = tmp_path / "news.jsonl"
    lines(path, [{"text": f"story {i}", "ts": i} for i in range(6)])

    class Dies:  # the real model, cut off after its first batch (as a process killed mid-run)
        calls = 0

        def classify(self, texts, batch_size=64):
            Dies.calls += 1
            if Dies.calls > 1:
                raise KeyboardInterrupt
            return loaded_model.classify(texts, batch_size)

    with pytest.raises(KeyboardInterrupt):
        drain(Monitor(engine, Dies(), chunk=4), [JsonlTail(path)], RuleSet())
    assert counts(engine)[0] == 4
    drain(Monitor(engine, loaded_model, chunk=4), [JsonlTail(path)], RuleSet())
    with Session(engine) as s:
        assert sorted(s.scalars(select(MonitorItem.t))) == [0, 1, 2, 3, 4, 5]


def test_a_chunk_of_the_stream_is_classified_in_one_call(tmp_path, engine, loaded_model):
    """The model sorts one call's texts by length into forward passes (less padding than arrival order), so a
    chunk's new texts go to it together, `batch_size` texts per pass."""
    path = tmp_path / "news.jsonl"
    lines(path, [{"text": f"story {i} " + "word " * (i % 4), "ts": i} for i in range(10)])
    calls = []

    class Counted:
        def classify(self, texts, batch_size=64):
            calls.append((len(texts), batch_size))
            return loaded_model.classify(texts, batch_size)

    assert drain(Monitor(engine, Counted(), batch_size=2, chunk=6), [JsonlTail(path)], RuleSet())["items"] == 10
    assert calls == [(6, 2), (4, 2)]


def test_folder_picks_up_new_files_and_skips_partial_ones(tmp_path, engine, loaded_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text(json.dumps({"text": "first story", "ts": 1}) + "\n", encoding="utf-8")
    (inbox / "b.json").write_text(json.dumps([{"text": "second story", "ts": 2}, {"text": "third", "ts": 3}]))
    (inbox / "c.txt").write_text("A whole article\nin a text file.\n", encoding="utf-8")
    (inbox / "d.json.part").write_text("[{", encoding="utf-8")
    (inbox / ".e.json").write_text("[{", encoding="utf-8")
    old = time.time() - 60
    for name in ("b.json", "c.txt"):
        os.utime(inbox / name, (old, old))
    watch = FolderWatch(inbox, settle=5.0)
    monitor = Monitor(engine, loaded_model)
    assert drain(monitor, [watch], RuleSet())["items"] == 4
    (inbox / "f.txt").write_text("just written", encoding="utf-8")  # too fresh: not settled yet
    with open(inbox / "a.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "appended story", "ts": 4}) + "\n")
    assert drain(monitor, [watch], RuleSet())["items"] == 1
    assert drain(Monitor(engine, loaded_model), [FolderWatch(inbox, settle=0)], RuleSet())["items"] == 1
    assert drain(monitor, [FolderWatch(inbox, settle=0)], RuleSet())["items"] == 0
    with Session(engine) as s:
        texts = set(s.scalars(select(MonitorText.text)))
    assert "A whole article\nin a text file." in texts and "just written" in texts and len(texts) == 6


def test_postgresql_by_url(postgres_url, loaded_model, tmp_path, add_items):
    import random

    from genforge.apps.monitor.alerts import evaluate
    from genforge.apps.monitor.analytics import windows
    from genforge.apps.monitor.rules import Rule
    from genforge.serve.db import connect

    engine = connect(postgres_url)
    path = tmp_path / "n.jsonl"
    lines(path, [{"text": "pg story", "ts": 7, "id": "a"}, {"text": "PG story", "ts": 8}])
    assert drain(Monitor(engine, loaded_model), [JsonlTail(path)], RuleSet())["duplicates"] == 1
    assert drain(Monitor(engine, loaded_model), [JsonlTail(path)], RuleSet())["items"] == 0
    assert counts(engine) == (2, 1, 1)
    rng = random.Random(0)
    add_items(engine, [(3600 * h + 60 * i, "pg", "negative" if rng.random() < (0.6 if h == 30 else 0.1) else "neutral",
                        None) for h in range(32) for i in range(60)])
    assert [w.n for w in windows(engine, by="topic", width=3600)["pg"]] == [60] * 32
    assert [a["window"] for a in evaluate(engine, RuleSet([Rule("s", "ewma_z")]))] == [30 * 3600]


def test_once_reads_a_last_line_without_newline(tmp_path, engine, loaded_model):
    """--once takes the files as they are: a last line with no newline is an item, not silently dropped."""
    (tmp_path / "inbox").mkdir()
    for path in (tmp_path / "news.jsonl", tmp_path / "inbox" / "more.jsonl"):
        lines(path, [{"text": f"{path.stem} first"}], partial=json.dumps({"text": f"{path.stem} last"}))
    sources = open_sources([f"jsonl:{tmp_path / 'news.jsonl'}", f"folder:{tmp_path / 'inbox'}"], once=True)
    assert drain(Monitor(engine, loaded_model), sources, RuleSet())["items"] == 4


def test_a_skipped_line_or_file_is_named_with_its_reason(tmp_path, engine, loaded_model, caplog):
    """`--once` logs plain messages (no JSON formatter to show extras): the message itself names the place."""
    (tmp_path / "inbox").mkdir()
    lines(tmp_path / "news.jsonl", [{"text": "good"}], partial="not json\n")
    (tmp_path / "inbox" / "bad.json").write_text("{oops", encoding="utf-8")
    sources = open_sources([f"jsonl:{tmp_path / 'news.jsonl'}", f"folder:{tmp_path / 'inbox'}"], settle=0, once=True)
    with caplog.at_level("WARNING", logger="genforge.monitor"):
        assert drain(Monitor(engine, loaded_model), sources, RuleSet())["items"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"skipped a bad line at {tmp_path / 'news.jsonl'}@") and "Expecting value" in m
               for m in messages), messages
    assert any(m.startswith(f"skipped a bad file {tmp_path / 'inbox' / 'bad.json'}: ") for m in messages), messages


def test_a_missing_jsonl_source_is_an_error_with_once_and_awaited_without(tmp_path):
    later = tmp_path / "later.jsonl"
    with pytest.raises(DataError, match="later.jsonl does not exist"):
        open_sources([f"jsonl:{later}"], once=True)
    assert [s.path for s in open_sources([f"jsonl:{later}"])] == [later]  # a running monitor follows it once made
    with pytest.raises(DataError, match="is a folder; follow it with --source folder:"):
        open_sources([f"jsonl:{tmp_path}"])
    result = CliRunner().invoke(app, ["app", "monitor", "run", "--model", str(tmp_path), "--source", "jsonl:nope.jsonl",
                                      "--once", "--no-serve", "--db", f"sqlite:///{tmp_path / 'm.db'}"])
    assert result.exit_code == 2 and "nope.jsonl does not exist" in result.output, result.output
    result = CliRunner().invoke(app, ["app", "monitor", "run", "--model", str(tmp_path), "--source", "http", "--once"])
    assert result.exit_code == 2 and result.output.startswith("error: --once drains file sources"), result.output


def test_times_outside_the_calendar_are_bad_items():
    for ts in (1e18, -1e20, "99999-01-01"):
        with pytest.raises(DataError, match="bad timestamp"):
            parse_item({"text": "x", "ts": ts}, "test", 0, "items[0]")
