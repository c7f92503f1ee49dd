"""Monitor fixtures: a tiny monitor model (tiny BERT sentiment classifier + discovered topics) made by
`genforge app monitor train` itself, a fresh database per test, and a helper that writes items with known
labels straight into the tables (for the analytics and alert tests, whose inputs must be exact)."""

from pathlib import Path

import pytest

from genforge.apps.monitor.config import MonitorTrainConfig

NEWS = {
    "negative": ["shares plunge after profit warning", "bank cuts jobs as losses mount", "stock falls on weak outlook",
                 "lawsuit hits the insurer hard", "company misses revenue estimates badly", "airline sinks on fuel costs"],
    "neutral": ["board meeting scheduled for monday", "company to report results in march",
                "bank names new chief financial officer", "fund holds annual general meeting"],
    "positive": ["shares jump after record profit", "bank raises dividend on strong year", "stock rallies on upbeat guidance",
                 "retailer beats sales forecasts", "chipmaker soars on new orders", "insurer upgraded by analysts"],
}


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    rows = ["text,label"] + [f"{t} {i},{label}" for label, texts in NEWS.items() for t in texts for i in range(3)]
    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _train_cfg(base: Path, data: list[str], out: Path, **kw) -> MonitorTrainConfig:
    values = dict(model=base, sentiment_data=data, out=out, topics=3, epochs=0, max_steps=2, batch_size=8,
                  seq_len=32, eval_every=2, classify={"warmup_steps": 1, "log_every": 1, "bf16": False})
    values.update(kw)
    return MonitorTrainConfig(**values)


@pytest.fixture(scope="session")
def train_cfg():
    """train_cfg(base, data_specs, out, **overrides) -> a 2-step MonitorTrainConfig."""
    return _train_cfg


@pytest.fixture(scope="session")
def monitor_model(tmp_path_factory, bert_dir, sentiment_csv) -> Path:
    from genforge.apps.monitor.train import train

    return train(_train_cfg(bert_dir, [str(sentiment_csv)], tmp_path_factory.mktemp("monitor") / "model"))


@pytest.fixture(scope="session")
def loaded_model(monitor_model):
    from genforge.apps.monitor.model import load_monitor_model

    return load_monitor_model(monitor_model)


@pytest.fixture
def engine(tmp_path):
    from genforge.serve.db import connect

    return connect(f"sqlite:///{tmp_path / 'monitor.db'}")


@pytest.fixture(scope="session")
def add_items():
    """add_items(engine, [(t, topic, sentiment, entity), ...]): items with exact labels, no model involved."""
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from genforge.apps.monitor.tables import MonitorItem, MonitorText

    def add(engine, rows, text="item") -> None:
        with Session(engine) as s, s.begin():
            start = s.query(MonitorText).count()
            s.execute(insert(MonitorText), [
                {"digest": f"{start + i:064d}", "text": f"{text} {start + i}", "sentiment": sentiment, "topic": topic,
                 "confidence": 0.9, "probs": "{}", "seen": 1, "first_seen": t}
                for i, (t, topic, sentiment, _entity) in enumerate(rows)])
            s.execute(insert(MonitorItem), [
                {"t": t, "source": "test", "ext_id": None, "entity": entity, "digest": f"{start + i:064d}",
                 "sentiment": sentiment, "topic": topic, "confidence": 0.9, "duplicate": False}
                for i, (t, topic, sentiment, entity) in enumerate(rows)])

    return add
