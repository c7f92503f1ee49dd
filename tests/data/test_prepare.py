import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genforge.artifacts import read_manifest, sha256_file
from genforge.cli import app
from genforge.data import prepare as prepare_module
from genforge.data.clean import clean_text
from genforge.data.config import PrepareConfig
from genforge.data.prepare import prepare
from genforge.errors import DataError, Stopped

ENGLISH = ("Our support team answers every request within one business day. If your order has not arrived "
           "after ten days, please write to us with the order number and the address it was sent to, and we "
           "will trace the parcel with the carrier.")
CHINESE = ("我们的客服团队会在一个工作日内回复每一个请求。如果您的订单在十天后仍未送达，请将订单号和收货地址发送给我们，"
           "我们会与快递公司联系追踪包裹。")
CHINESE_CLEAN = clean_text(CHINESE)
DOC_REASONS = ("bad_record", "empty", "too_short", "too_long", "symbol_ratio", "repetition", "exact_dup", "near_dup")


def run(tmp_path, inputs, **kw):
    kw.setdefault("workers", 1)
    return prepare(PrepareConfig(inputs=list(inputs), out=tmp_path / "out", **kw))


def outputs(out):
    rows = {}
    for split in ("train", "val"):
        lines = (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        rows[split] = [json.loads(line) for line in lines]
    return rows


def texts(out):
    rows = outputs(out)
    return [r["text"] for r in rows["train"] + rows["val"]]


def test_mixed_formats_end_to_end(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "notes.md").write_text(f"# Customer support handbook\n\n{ENGLISH}\n\nok\n", encoding="utf-8")
    (src / "sub" / "gbk.txt").write_bytes(f"{CHINESE}\n".encode("gb18030"))
    (src / "tickets.jsonl").write_text(json.dumps({"text": "Ticket: my card 4111 1111 1111 1111 was charged "
                                                           "twice, mail me at jo@example.com"}) + "\n")
    (src / "faq.csv").write_text('text,label\n"How do I reset my password, please?",1\n', encoding="utf-8")
    (src / "more.tsv").write_text("text\tlabel\nWhere can I download my monthly invoices?\t2\n", encoding="utf-8")
    pq.write_table(pa.table({"text": ["Parquet rows are documents as well, one per row."]}), src / "rows.parquet")
    (src / "page.html").write_text("<html><head><style>body{}</style></head><body><script>alert('x')</script>"
                                   "<p>Opening hours are 9&ndash;17 on weekdays &amp; Saturdays.</p></body></html>")
    (src / "blob.bin").write_bytes(bytes(range(256)) * 4)
    stats = run(tmp_path, [src], val_fraction=0.0)

    out = tmp_path / "out"
    got = texts(out)
    assert set(got) == {
        "# Customer support handbook", ENGLISH, CHINESE_CLEAN,
        "Ticket: my card <CARD> was charged twice, mail me at <EMAIL>",
        "How do I reset my password, please?", "Where can I download my monthly invoices?",
        "Parquet rows are documents as well, one per row.", "Opening hours are 9–17 on weekdays & Saturdays.",
    }
    assert {r["source"] for r in outputs(out)["train"]} >= {str(src / "sub" / "gbk.txt"), str(src / "rows.parquet")}
    assert stats == json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["removed"]["too_short"] == 1 and stats["removed"]["binary"] == 1
    assert stats["pii"] == {"EMAIL": 1, "ID": 0, "IBAN": 0, "CARD": 1, "PHONE": 0, "IP": 0}
    assert stats["docs_in"] == stats["docs_out"] + sum(stats["removed"][r] for r in DOC_REASONS)
    assert stats["docs_out"] == stats["train_docs"] == len(got)
    assert stats["bytes_in"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert stats["bytes_out"] == sum(len(t.encode("utf-8")) for t in got)
    manifest = read_manifest(out, stage="data.prepare")
    inputs = {i["path"]: i["sha256"] for i in manifest["inputs"]}
    assert len(inputs) == 8 and inputs[str(src / "faq.csv")] == sha256_file(src / "faq.csv")
    assert (out / "config.yaml").is_file()


def test_exact_and_near_duplicates(tmp_path):
    english_near = ENGLISH.replace("carrier", "courier")
    english_exact = ENGLISH.upper().replace(",", " ;")  # same after case/punctuation normalisation
    chinese_near = CHINESE.replace("包裹", "邮包")
    other = "An unrelated document about opening hours, holidays and the phone line for urgent cases."
    docs = [ENGLISH, CHINESE, english_near, english_exact, other, chinese_near, ENGLISH]
    (tmp_path / "d.txt").write_text("\n\n".join(docs), encoding="utf-8")
    stats = run(tmp_path, [tmp_path / "d.txt"], val_fraction=0.0)
    assert texts(tmp_path / "out") == [ENGLISH, CHINESE_CLEAN, other]  # the first copy is the one kept
    assert stats["removed"]["exact_dup"] == 2 and stats["removed"]["near_dup"] == 2
    no_dedup = run(tmp_path, [tmp_path / "d.txt"], dedup=False)
    assert no_dedup["docs_out"] == len(docs)


def test_threshold_decides_what_is_near(tmp_path):
    lines = [ENGLISH, ENGLISH.replace("business day", "working week").replace("ten days", "two weeks")]
    (tmp_path / "d.txt").write_text("\n\n".join(lines), encoding="utf-8")
    assert run(tmp_path, [tmp_path / "d.txt"], near_dup_threshold=0.5)["removed"]["near_dup"] == 1
    assert run(tmp_path, [tmp_path / "d.txt"], near_dup_threshold=0.99)["removed"]["near_dup"] == 0


def test_split_does_not_depend_on_order_or_workers(tmp_path):
    rng = random.Random(0)
    docs = [f"Document {i}: " + " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) + str(rng.random())
                                          for _ in range(8)) for i in range(600)]
    (tmp_path / "a.txt").write_text("\n".join(docs), encoding="utf-8")
    shuffled = docs[:]
    rng.shuffle(shuffled)
    (tmp_path / "b").mkdir()
    for k in range(3):
        (tmp_path / "b" / f"part{k}.txt").write_text("\n".join(shuffled[k::3]), encoding="utf-8")

    first = run(tmp_path, [tmp_path / "a.txt"], split_by="line", val_fraction=0.2)
    val_a = {r["text"] for r in outputs(tmp_path / "out")["val"]}
    run(tmp_path, [tmp_path / "b"], split_by="line", val_fraction=0.2, workers=2)
    val_b = {r["text"] for r in outputs(tmp_path / "out")["val"]}
    assert val_a == val_b
    assert 0.12 * len(docs) < first["val_docs"] < 0.28 * len(docs)
    run(tmp_path, [tmp_path / "a.txt"], split_by="line", val_fraction=0.2, seed=1)
    assert {r["text"] for r in outputs(tmp_path / "out")["val"]} != val_a


def test_second_pass_over_outputs_keeps_everything_in_place(tmp_path):
    """The global-dedup recipe of docs/data.md: prepare over prepared shards changes nothing else."""
    rng = random.Random(1)
    words = ENGLISH.split()
    docs = [" ".join(rng.sample(words, 12)) + f" mail x{i}@example.com, call +1 (415) 555-{i:04d}." for i in range(300)]
    docs += [CHINESE, CHINESE.replace("包裹", "邮包"), "<EMAIL> <PHONE> <CARD> <IP>"]
    (tmp_path / "a.txt").write_text("\n\n".join(docs), encoding="utf-8")
    first = prepare(PrepareConfig(inputs=[tmp_path / "a.txt"], out=tmp_path / "p1", val_fraction=0.2, workers=1))
    shards = [tmp_path / "p1" / "train.jsonl", tmp_path / "p1" / "val.jsonl"]
    second = prepare(PrepareConfig(inputs=shards, out=tmp_path / "p2", val_fraction=0.2, workers=1))
    assert second["docs_out"] == second["docs_in"] == first["docs_out"]
    for split in ("train", "val"):
        assert ({r["text"] for r in outputs(tmp_path / "p2")[split]}
                == {r["text"] for r in outputs(tmp_path / "p1")[split]})


def test_pii_can_be_switched_off(tmp_path):
    (tmp_path / "a.txt").write_text("Please call me back on +44 20 7946 0958 tomorrow morning.", encoding="utf-8")
    run(tmp_path, [tmp_path / "a.txt"])
    assert texts(tmp_path / "out") == ["Please call me back on <PHONE> tomorrow morning."]
    stats = run(tmp_path, [tmp_path / "a.txt"], pii=False)
    assert texts(tmp_path / "out") == ["Please call me back on +44 20 7946 0958 tomorrow morning."]
    assert sum(stats["pii"].values()) == 0


def test_real_latin1_corpus(tmp_path, shared_data):
    stats = run(tmp_path, [shared_data / "mr_polarity" / "rt-polarity.all"], split_by="line")
    assert stats["docs_in"] == 10662 and stats["docs_out"] > 10000
    got = texts(tmp_path / "out")
    assert any("clichés" in t for t in got) and not any("\ufffd" in t for t in got)


def test_interrupted_rerun_leaves_the_earlier_run_finished(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("\n\n".join(f"A long enough paragraph number {i}." for i in range(50)))
    run(tmp_path, [tmp_path / "a.txt"])
    out = tmp_path / "out"
    assert (out / "manifest.json").is_file()
    finished = (out / "train.jsonl").read_text()

    calls = []

    def dies_midway(text):
        calls.append(text)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return text, {}

    monkeypatch.setattr(prepare_module, "scrub_pii", dies_midway)
    with pytest.raises(Stopped):
        run(tmp_path, [tmp_path / "a.txt"])
    # The rerun wrote only its own partial files: the old run is intact and still finished.
    assert (out / "train.jsonl").read_text() == finished
    assert read_manifest(out, "data.prepare")["metrics"]["train_docs"] == len(finished.splitlines())
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "dedup.partial.bin", "manifest.json",
                                                     "prepare.partial.json", "stats.json", "train.jsonl",
                                                     "train.partial.jsonl", "val.jsonl", "val.partial.jsonl"]


def test_a_rerun_that_fails_on_bad_input_keeps_the_earlier_run(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"A long enough paragraph number {i}." for i in range(50)))
    (tmp_path / "empty.txt").write_text("")
    run(tmp_path, [tmp_path / "a.txt"])
    out = tmp_path / "out"
    finished = read_manifest(out, "data.prepare")
    with pytest.raises(DataError, match="no documents left"):
        run(tmp_path, [tmp_path / "empty.txt"])
    assert read_manifest(out, "data.prepare") == finished
    assert len(texts(out)) == finished["metrics"]["docs_out"]


def invoke(*args):
    result = CliRunner().invoke(app, ["data", "prepare", *map(str, args)])
    return result.exit_code, result.output.strip()


def test_cli_runs_the_stage(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": ENGLISH}) + "\n", encoding="utf-8")
    code, output = invoke(tmp_path / "a.jsonl", "--text-field", "body", "--out", tmp_path / "o", "--val-fraction", 0)
    assert code == 0, output
    assert "documents in / out" in output
    assert texts(tmp_path / "o") == [ENGLISH]


def test_cli_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"body": "x", "id": 1}\n', encoding="utf-8")
    (tmp_path / "short.txt").write_text("tiny\n\nsmall\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "o"
    cases = [
        ([tmp_path / "missing.txt", "--out", out], f"error: input not found: {tmp_path / 'missing.txt'}"),
        ([tmp_path / "a.jsonl", "--out", out],
         f"error: {tmp_path / 'a.jsonl'}: no field 'text' (it has: body, id); choose one with --text-field"),
        ([tmp_path / "short.txt", "--out", out], "error: no documents left after filtering 2 read (too_short: 2)"),
        ([tmp_path / "short.txt", "--val-fraction", 2], "error: val_fraction must be in [0, 1); got 2.0"),
        ([tmp_path / "short.txt", "--near-dup-threshold", 0], "error: near_dup_threshold must be in (0, 1]; got 0.0"),
        (["--out", out], "error: give at least one INPUT file or folder"),
        ([tmp_path / "empty", "--out", out], f"error: no files found in {tmp_path / 'empty'}"),
    ]
    for args, message in cases:
        code, output = invoke(*args)
        assert code == 2, output
        assert "\n" not in output and output.startswith(message), output
    assert not out.exists()  # bad input leaves nothing to resume, not even an empty folder


def test_bad_input_leaves_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "short.txt").write_text("tiny\n\nsmall\n", encoding="utf-8")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.md").write_text("mine")
    code, output = invoke(tmp_path / "short.txt", "--out", tmp_path / "o")
    assert code == 2 and output.startswith("error: no documents left"), output
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["notes.md"]
