"""`data prepare --resume`: an interrupted run continues after its last checkpoint and ends as an
uninterrupted run would, with its documents neither cleaned nor deduplicated twice."""

import json

import pytest
from typer.testing import CliRunner

from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.data import prepare as prepare_module
from genforge.data.config import PrepareConfig
from genforge.data.prepare import prepare
from genforge.errors import ConfigError, Stopped


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """Paragraphs in chunks of 5 documents, checkpointed after every chunk; the late ones repeat early ones
    exactly and nearly, so a resumed run must know what the interrupted one kept; plus a file the reader skips."""
    monkeypatch.setattr(prepare_module, "CHUNK_DOCS", 5)
    monkeypatch.setattr(prepare_module, "CHECKPOINT_SECONDS", 0.0)
    early = [f"Paragraph {i}: the parcel for order {i * 37} left our warehouse in {['Lyon', 'Graz', 'Turku'][i % 3]} "
             f"on day {i} and reaches the customer within a week." for i in range(30)]
    late = [early[2], early[4].replace("warehouse", "warehouses"), "Short.",
            *(f"Refund {i}: {i * 11} euros went back to the card ending in {1000 + i * 7} after the {w} return."
              for i, w in enumerate(["first", "second", "late", "partial", "damaged", "lost", "wrong", "early"]))]
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(early), encoding="utf-8")
    (folder / "b.txt").write_text("\n\n".join(late), encoding="utf-8")
    (folder / "c.bin").write_bytes(bytes(range(256)) * 4)
    return folder


def run(tmp_path, corpus, name, **kw):
    kw.setdefault("workers", 1)
    return prepare(PrepareConfig(inputs=[corpus], out=tmp_path / name, val_fraction=0.2, **kw))


def interrupt(tmp_path, corpus, counted, monkeypatch, at=4, **kw):
    """A run into tmp_path/resumed that Ctrl-C stops while it processes chunk `at`."""
    real = prepare_module.process_chunk
    counted(prepare_module, "process_chunk").stop_at = at
    with pytest.raises(Stopped):
        run(tmp_path, corpus, "resumed", **kw)
    monkeypatch.setattr(prepare_module, "process_chunk", real)  # a worker pool can pickle only the real one


def same_stats(a, b):
    drop = ("seconds", "mb_per_s")
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path, corpus, counted, monkeypatch):
    chunks = counted(prepare_module, "process_chunk")
    whole = run(tmp_path, corpus, "whole")
    total = chunks.count
    assert whole["removed"]["exact_dup"] == 1 and whole["removed"]["near_dup"] == 1
    assert whole["removed"]["binary"] == 1 and whole["removed"]["too_short"] == 1

    interrupt(tmp_path, corpus, counted, monkeypatch, at=4)
    out = tmp_path / "resumed"
    record = json.loads((out / "prepare.partial.json").read_text())
    assert record["docs_in"] == 15 and not (out / "manifest.json").exists()
    # what a kill during the next writes leaves behind the record: cut back on --resume
    with open(out / "train.partial.jsonl", "ab") as f:
        f.write(b'{"text": "half a li')
    with open(out / "dedup.partial.bin", "ab") as f:
        f.write(b"\x01" * 100)

    chunks = counted(prepare_module, "process_chunk")
    resumed = run(tmp_path, corpus, "resumed", resume=True)
    assert chunks.count == total - 3  # the 3 checkpointed chunks are not processed again
    for name in ("train.jsonl", "val.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert same_stats(resumed, whole)  # the late duplicates were caught by the refilled index; nothing counted twice
    assert read_manifest(out, "data.prepare")["metrics"]["docs_out"] == whole["docs_out"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "manifest.json", "stats.json", "train.jsonl",
                                                     "val.jsonl"]


def test_resume_without_dedup(tmp_path, corpus, counted, monkeypatch):
    whole = run(tmp_path, corpus, "whole", dedup=False)
    interrupt(tmp_path, corpus, counted, monkeypatch, at=2, dedup=False)
    assert not (tmp_path / "resumed" / "dedup.partial.bin").exists()
    assert same_stats(run(tmp_path, corpus, "resumed", dedup=False, resume=True), whole)
    assert (tmp_path / "resumed" / "train.jsonl").read_bytes() == (tmp_path / "whole" / "train.jsonl").read_bytes()


def test_resume_refuses_other_settings_and_inputs_and_leaves_the_run_as_it_was(tmp_path, corpus, counted, monkeypatch):
    interrupt(tmp_path, corpus, counted, monkeypatch)
    out = tmp_path / "resumed"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="--resume: seed 1 differs from the interrupted run's 0"):
        run(tmp_path, corpus, "resumed", resume=True, seed=1)
    text = (corpus / "b.txt").read_bytes()
    (corpus / "b.txt").write_text("Another text altogether, long enough to be kept.", encoding="utf-8")
    with pytest.raises(ConfigError, match="--resume: the input is not the interrupted run's"):
        run(tmp_path, corpus, "resumed", resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (corpus / "b.txt").write_bytes(text)
    assert run(tmp_path, corpus, "resumed", resume=True, workers=2)["workers"] == 2  # free to change


def test_folder_rules_from_the_command_line(tmp_path, corpus, counted, monkeypatch):
    out = tmp_path / "resumed"
    result = CliRunner().invoke(app, ["data", "prepare", str(corpus), "--out", str(out), "--resume"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (f"error: nothing to resume: {out / 'prepare.partial.json'} "
                                                      "does not exist; drop --resume")
    interrupt(tmp_path, corpus, counted, monkeypatch)
    result = CliRunner().invoke(app, ["data", "prepare", str(corpus), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 2
    assert "holds an unfinished run: add --resume to continue it" in result.output
    (out / "prepare.partial.json").write_text("{not json")
    result = CliRunner().invoke(app, ["data", "prepare", str(corpus), "--out", str(out), "--resume"])
    assert result.exit_code == 2 and "prepare.partial.json is corrupt" in result.output
    assert f"delete {out / 'prepare.partial.json'} to prepare anew" in result.output


def test_ctrl_c_from_the_command_line_says_to_resume(tmp_path, corpus, counted):
    """The generic CLI line offered a rerun without --resume, which the folder then refuses."""
    out = tmp_path / "resumed"
    counted(prepare_module, "process_chunk").stop_at = 3
    result = CliRunner().invoke(app, ["data", "prepare", str(corpus), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 130
    assert result.output.strip() == (f"stopped by Ctrl-C: {out} keeps the documents done up to its last checkpoint; "
                                     "continue with the same command plus --resume")
    assert (out / "prepare.partial.json").is_file()

