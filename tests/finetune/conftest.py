"""Tiny saved base models (a Llama decoder and a BERT encoder on genforge's own BPE) and tiny data sets.

The models are random: the tests check plumbing (labels, masks, formats, reload equivalence), and
the few steps they train only have to move the loss, not to learn the task.
"""

import json
from pathlib import Path

import pytest

POSITIVE = ["profits rose sharply", "shares jumped after strong results", "record revenue this quarter",
            "the company beat expectations", "sales grew and margins improved", "strong demand lifted the stock"]
NEGATIVE = ["profits fell sharply", "shares dropped after weak results", "the company missed expectations",
            "sales shrank and margins fell", "losses widened this quarter", "weak demand hit the stock"]


@pytest.fixture
def jsonl(tmp_path):
    """jsonl(name, records): a JSONL file of `records` in the test's temporary folder."""

    def write(name: str, records: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return path

    return write


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    """Two classes, 60 rows (each phrase with 5 suffixes), enough for a hash split with both labels on each side."""
    rows = ["text,label"]
    for i in range(5):
        rows += [f"{t} {i},positive" for t in POSITIVE] + [f"{t} {i},negative" for t in NEGATIVE]
    path = tmp_path / "sentiment.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
