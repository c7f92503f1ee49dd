"""`app support build` reads its inputs before it touches --out: a rebuild on bad input keeps the earlier
assistant (its manifest is written by hand here: a real build takes longer than a test should)."""

import pytest

from genforge.apps.support.build import build
from genforge.apps.support.config import BuildConfig
from genforge.artifacts import read_manifest, write_manifest
from genforge.errors import DataError


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
