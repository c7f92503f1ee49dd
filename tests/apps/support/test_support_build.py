"""`app support build` reads its inputs before it touches --out: a rebuild on bad input keeps the earlier
assistant (its manifest is written by hand here: a real build takes longer than a test should)."""

import pytest

from genforge.apps.support.build import VAL_BUCKET, build, split_calibration
from genforge.apps.support.config import BuildConfig
from genforge.apps.support.ingest import Passage
from genforge.artifacts import read_manifest, write_manifest
from genforge.errors import DataError
from genforge.finetune.data import hash_bucket


@pytest.mark.parametrize("bad", ["missing val", "empty history"])
def test_a_rebuild_on_bad_input_keeps_the_earlier_assistant(company, tmp_path, bad):
    out = tmp_path / "support"
    out.mkdir()
    finished = write_manifest(out, "app.support.build", None, metrics={"passages": 12})
    empty_history = tmp_path / "history.jsonl"
    empty_history.write_text("", encoding="utf-8")
    change, message = {"missing val": ({"val": tmp_path / "gone.csv"}, "data file .*gone.csv does not exist"),
                       "empty history": ({"history": empty_history}, "history.jsonl holds no dialogues")}[bad]
    inputs = {"kb": [company / "faq.csv"], "val": company / "val.csv", "history": company / "history.jsonl"}
    with pytest.raises(DataError, match=message):
        build(BuildConfig(**{**inputs, **change}, out=out))
    assert read_manifest(out, "app.support.build") == finished


def test_holding_out_calibration_questions_keeps_every_entry_in_the_index():
    questions = [f"how do I change my delivery address {n}" for n in range(400)]
    held = [q for q in questions if hash_bucket(q) == VAL_BUCKET]
    other = [q for q in questions if hash_bucket(q) != VAL_BUCKET]
    passages = [Passage(0, "faq", "address", held[0], "A", "f:1"), Passage(1, "faq", "address", held[1], "A", "f:2"),
                Passage(2, "faq", "refund", other[0], "B", "f:3"), Passage(3, "faq", "refund", held[2], "B", "f:4"),
                Passage(4, "faq", "hours", held[3], "C", "f:5")]
    kept, val, _ = split_calibration(passages, [])
    assert [p.id for p in kept] == [0, 2, 4]  # 'address' had every variant in the bucket: its first stays
    assert val == [(held[1], "address"), (held[2], "refund")]
