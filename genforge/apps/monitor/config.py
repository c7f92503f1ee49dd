"""Configs of `genforge app monitor train|run|report`.

Light on purpose (no torch/numpy/sqlalchemy import): the CLI builds its flags from these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.config import Config, field
from genforge.errors import ConfigError

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_REPLAY_DAYS = 3660  # ten years of simulated time
MAX_REPLAY_ITEMS = 10_000_000  # ~130 bytes an item: over a GB of JSONL, far beyond a demo or a rule-tuning run
SURGE_FROM_HOUR = 48  # replay surges start after two days of baseline,
SURGE_TAIL_HOURS = 2  # and end at least this long before the stream does
SENTIMENTS = ("negative", "neutral", "positive")


@dataclass
class MonitorTrainConfig(Config):
    """Sentiment classifier (+ topic classifier or discovered topics) for the monitor, in one model folder."""

    sentiment_data: list[str] = field(default_factory=list, help="labelled sentiment file, as PATH or "
                                      "PATH#RAW=LABEL,... mapping raw labels to negative/neutral/positive "
                                      "(CSV/TSV/JSONL with text,label; JSON [[text,label],...]; .txt "
                                      "`sentence@label`); repeatable, English and Chinese may be mixed")
    topic_data: list[str] = field(default_factory=list, help="labelled topic file (text,label); repeatable. "
                                  "Without it, topics are discovered from the corpus")
    corpus: list[Path] = field(default_factory=list, help="texts to discover topics in (default: the sentiment "
                                                          "texts); CSV/JSONL field `text`, or one text a line")
    topics: int = field(8, help="number of topics to discover when no --topic-data is given")
    model: Path = field(None, help="base encoder to fine-tune (a local HF folder, e.g. MiniLM)")
    embedder: Path | None = field(None, help="sentence encoder for topic discovery (default: --model)")
    out: Path = field(None, help="output model folder (sentiment/, topic/ or topics.json, manifest.json)")
    holdout: bool = field(True, help="leave hash bucket 9 of every file out of training (the shared test "
                                     "bucket), so benchmarks can test on it")
    epochs: float = field(3.0, help="passes over the training data of each classifier")
    max_steps: int = field(300, help="optimizer steps when --epochs is 0")
    batch_size: int = field(32, help="texts per micro-batch")
    seq_len: int = field(64, help="longest text in tokens")
    lr: float = field(5e-5, help="peak learning rate")
    eval_every: int = field(100, help="validation every N steps")
    seed: int = field(0, help="random seed (training, k-means)")
    topic_assign: str = field("router", help="how run time puts items in discovered topics: router = TF-IDF + "
                                             "logistic regression fitted to the clusters (microseconds per "
                                             "item); encoder = nearest centroid of the embedding (exact, but a "
                                             "second transformer pass per item)", choices=("router", "encoder"))
    compress: str | None = field(None, help="also compress the sentiment classifier with `genforge compress` "
                                            "and monitor with the compressed copy (faster on CPU)",
                                 choices=("int8", "onnx-int8", "bf16"))
    classify: dict[str, Any] = field(default_factory=dict, help="extra `finetune classify` keys (YAML only)")
    zh_model: str | None = field(None, help="base of a second sentiment classifier for the Chinese texts (routed "
                                            "by script, in training and at run time): a local HF folder, or "
                                            "`scratch` for a small BERT on a BPE of the Chinese training texts, "
                                            "for a --model whose vocabulary lacks Chinese, as MiniLM's does "
                                            "(default: --model classifies every text)")
    zh_classify: dict[str, Any] = field(default_factory=dict, help="`finetune classify` keys of the Chinese "
                                        "classifier over `classify` (YAML only; a scratch base wants e.g. "
                                        "{lr: 5.0e-4, epochs: 5})")
    resume: bool = field(False, help="continue the interrupted training in --out: classifiers it finished are "
                                     "kept, an unfinished one goes on from its checkpoint (the settings must "
                                     "be the same)")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the base encoder folder: --model DIR")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        if not self.sentiment_data:
            raise ConfigError("give labelled sentiment data: --sentiment-data FILE[#RAW=LABEL,...]")
        if self.topics < 2:
            raise ConfigError(f"--topics must be >= 2, got {self.topics}")
        if self.zh_classify and not self.zh_model:
            raise ConfigError("zh_classify configures the Chinese classifier: give its base too (--zh-model)")


@dataclass
class MonitorRunConfig(Config):
    """Ingest streams, classify, store, track trends, alert, and serve the dashboard."""

    model: Path = field(None, help="a `genforge app monitor train` output folder")
    source: list[str] = field(default_factory=list, help="a stream: jsonl:PATH (followed like tail -f; without "
                                                         "--once it may appear later), "
                                                         "folder:PATH (new files picked up) or http "
                                                         "(POST /v1/monitor/items); repeatable")
    db: str | None = field(None, help="database URL (default: $GENFORGE_DB_URL or sqlite:///~/.genforge/serve.db)")
    rules: Path | None = field(None, help="alert rules YAML (default: the built-in negative-surge rules)")
    batch_size: int = field(64, help="texts per forward pass of the classifiers")
    chunk: int = field(512, help="items read from the file sources and stored per transaction; their new texts "
                                 "are classified together, sorted by length into --batch-size passes (less padding)")
    poll: float = field(1.0, help="seconds between looks at the file sources")
    once: bool = field(False, help="ingest what the file sources hold now, evaluate alerts, and exit")
    serve: bool = field(True, help="serve the dashboard and the HTTP API (needed for --source http)")
    host: str = field("127.0.0.1", help="interface of the dashboard/API server")
    port: int = field(8000, help="TCP port of the dashboard/API server")
    api_key: str | None = field(None, help="bearer key the API and dashboard require (default: $GENFORGE_API_KEY "
                                           "or the database's managed keys)")
    threads: int = field(0, help="torch CPU threads; 0 = torch's default")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the monitor model folder: --model DIR (from `genforge app monitor train`)")
        if not self.source:
            raise ConfigError("give at least one --source (jsonl:PATH, folder:PATH or http)")
        for spec in self.source:
            kind, _, path = spec.partition(":")
            if kind == "http" and not path:
                if not self.serve:
                    raise ConfigError("--source http needs the server: drop --no-serve")
            elif kind not in ("jsonl", "folder") or not path:
                raise ConfigError(f"--source must be jsonl:PATH, folder:PATH or http; got {spec!r}")
        if self.once and all(spec == "http" for spec in self.source):
            raise ConfigError("--once drains file sources (jsonl:PATH, folder:PATH); an http source has nothing to "
                              "read now: drop --once to serve it")
        for name, value in (("--batch-size", self.batch_size), ("--chunk", self.chunk)):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if not self.poll > 0:
            raise ConfigError(f"--poll must be > 0 seconds, got {self.poll}")


@dataclass
class MonitorReportConfig(Config):
    """A static HTML report (PNG charts, alerts with example items) from the monitor's database."""

    out: Path = field(None, help="the HTML file to write")
    db: str | None = field(None, help="database URL (default: $GENFORGE_DB_URL or sqlite:///~/.genforge/serve.db)")
    since: str | None = field(None, help="first moment to include: ISO date/time, or a span back from the last "
                                         "item such as 7d, 24h, 90m (default: everything)")
    until: str | None = field(None, help="end of the report period (ISO date/time; default: the last item)")
    window: str = field("hour", help="time-series window", choices=tuple(WINDOWS))
    by: str = field("topic", help="series per topic or per entity", choices=("topic", "entity"))

    def check(self) -> None:
        if self.out is None:
            raise ConfigError("give the report file: --out report.html")
        if self.out.is_dir():
            raise ConfigError(f"--out is the HTML file to write, but {self.out} is a folder: give a file such as "
                              f"{self.out / 'report.html'}")


@dataclass
class MonitorReplayConfig(Config):
    """A timed JSONL stream from labelled texts, with injected negative surges of known size and start."""

    data: list[str] = field(default_factory=list, help="labelled sentiment file(s), as for `train` "
                                                       "(PATH or PATH#RAW=LABEL,...); repeatable")
    out: Path = field(None, help="output folder: stream.jsonl, surges.json (the truth), manifest")
    days: int = field(7, help="simulated days")
    per_hour: int = field(40, help="mean items per entity per hour")
    base: float = field(0.15, help="base negative share")
    surges: int = field(4, help="negative surges to inject (after the first two days)")
    surge_hours: int = field(6, help="length of each surge in hours")
    factor: float = field(2.0, help="a surge multiplies the base negative share by this")
    entities: list[str] = field(default_factory=lambda: ["AAPL", "JPM", "TSLA", "XOM"],
                                help="entities (tickers) the items are spread over; surges hit one each")
    start: str = field("2026-01-05T00:00:00Z", help="time of the first item (ISO 8601)")
    seed: int = field(0, help="random seed")

    def check(self) -> None:
        if not self.data:
            raise ConfigError("give labelled data: --data FILE[#RAW=LABEL,...]")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        if not 3 <= self.days <= MAX_REPLAY_DAYS or self.per_hour < 1 or not self.entities:
            raise ConfigError(f"--days must be in 3..{MAX_REPLAY_DAYS}, --per-hour >= 1, and --entities non-empty; "
                              f"got {self.days}, {self.per_hour}, {len(self.entities)}")
        if any(not e.strip() for e in self.entities):  # a blank entity is stored as none: its surges could never match
            raise ConfigError(f"--entities must be names such as AAPL; got {self.entities}")
        expected = self.days * 24 * self.per_hour * len(self.entities)
        if expected > MAX_REPLAY_ITEMS:
            raise ConfigError(f"--days x 24 x --per-hour x entities = {expected:,} items; a replay holds at most "
                              f"{MAX_REPLAY_ITEMS:,}: fewer --days, --per-hour or --entities")
        if not 0 < self.base <= 1 or not 0 < self.base * self.factor <= 1:
            raise ConfigError(f"--base must be in (0, 1] and --base x --factor in (0, 1]; got {self.base} x "
                              f"{self.factor}")
        if self.surges < 0:
            raise ConfigError(f"--surges must be >= 0; got {self.surges}")
        room = self.days * 24 - SURGE_FROM_HOUR - SURGE_TAIL_HOURS  # hours a surge may start in
        if self.surges and not 1 <= self.surge_hours < room:
            raise ConfigError(f"--surge-hours must be in 1..{room - 1} for --days {self.days} (surges start after "
                              f"the first {SURGE_FROM_HOUR} hours); got {self.surge_hours}")
