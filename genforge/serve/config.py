"""Configs of `genforge serve` and `genforge keys create|list|revoke`.

Light on purpose (no torch/fastapi import): the CLI builds its flags from these dataclasses at start-up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, check_threads, field
from genforge.errors import ConfigError
from genforge.generate.config import BACKENDS, DTYPES

LOG_LEVELS = ("debug", "info", "warning", "error")
DB_ENV = "GENFORGE_DB_URL"
KEY_ENV = "GENFORGE_API_KEY"
MAX_RATE_LIMIT = 1_000_000  # requests per minute: far above any one server, well inside a database INTEGER


def default_db_url() -> str:
    """$GENFORGE_DB_URL, else a SQLite file in ~/.genforge, so `genforge keys` and `genforge serve` agree."""
    return os.environ.get(DB_ENV) or f"sqlite:///{Path('~/.genforge/serve.db').expanduser()}"


def check_rate_limit(limit: int) -> None:
    """Bound a requests-per-minute limit: a key's is stored as a database INTEGER (too large is an overflow)."""
    if limit > MAX_RATE_LIMIT:
        raise ConfigError(f"rate_limit must be <= {MAX_RATE_LIMIT} requests per minute; got {limit}")


@dataclass(frozen=True)
class Variant:
    """One served model folder: its public name, its folder and its A/B traffic weight."""

    name: str
    path: Path
    weight: float = 1.0
    weighted: bool = False  # the weight was given: the folder takes part in the A/B test of the --model name


def parse_variant(spec: str) -> Variant:
    """`NAME=DIR[:WEIGHT]` -> Variant. A trailing `:x` that is not a number belongs to the path when it holds a
    path separator (`C:/models/x`) or a folder of that whole name exists; otherwise it is a mistyped weight
    (`b=runs/chat:O.1`), refused here rather than reported later as a missing folder `runs/chat:O.1`."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise ConfigError(f"--variant must be NAME=FOLDER[:WEIGHT]; got {spec!r}")
    path, weight, weighted = rest, 1.0, False
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            path, weight, weighted = head, float(tail), True
        except ValueError:
            if not any(c in tail for c in "/\\") and not Path(rest).expanduser().exists():
                raise ConfigError(f"--variant {spec!r}: {tail!r} after the last ':' is not a number and there is "
                                  f"no folder {rest!r}; write NAME=FOLDER[:WEIGHT] with a numeric weight, "
                                  f"e.g. {name.strip()}={head}:0.1") from None
    if not 0 < weight < math.inf:
        raise ConfigError(f"--variant {spec!r}: the weight must be a finite number > 0 (NAME=FOLDER[:WEIGHT])")
    return Variant(name.strip(), Path(path).expanduser(), weight, weighted)


@dataclass
class ServeConfig(Config):
    model: Path = field(None, help="model folder to serve: a causal LM (full or LoRA adapter), a classifier "
                                   "run folder or an encoder")
    name: str | None = field(None, help="public model name of --model in the API (default: the folder's name)")
    variant: list[str] = field(default_factory=list, help="another model folder to serve, as NAME=DIR[:WEIGHT] "
                                                          "(repeatable)")
    host: str = field("127.0.0.1", help="interface to listen on; a non-loopback host needs an API key")
    port: int = field(8000, help="TCP port")
    api_key: str | None = field(None, help=f"static bearer key clients must send (default: ${KEY_ENV})")
    insecure_open: bool = field(False, help="allow serving on a non-loopback host without any API key")
    db: str | None = field(None, help=f"SQLAlchemy database URL for managed keys (default: ${DB_ENV} or "
                                      "sqlite:///~/.genforge/serve.db)")
    rate_limit: int = field(0, help="requests per minute per API key (a managed key's own limit wins); 0 = off")
    max_batch: int = field(32, help="most sequences decoded together in one running batch")
    max_queue: int = field(256, help="most sequences waiting for a batch slot; more are refused with 429")
    cache_len: int = field(0, help="KV-cache columns per batch row; 0 = twice the model's context")
    max_prefill_tokens: int = field(4096, help="most prompt tokens taken into the batch between two decode steps")
    prefill_chunk: int = field(512, help="while others decode, prefill a longer prompt this many tokens per step "
                                         "(chunked prefill: it no longer stalls their tokens); 0 = whole prompts")
    max_prompt_tokens: int = field(0, help="longest accepted prompt in tokens; 0 = the model's context")
    max_tokens: int = field(1024, help="most tokens one completion may generate")
    max_body_bytes: int = field(1_000_000, help="largest accepted request body")
    request_timeout: float = field(600.0, help="seconds a request may take, queue included, before it is ended")
    dtype: str = field("auto", help="weights/compute dtype; auto = the model's (float32)", choices=DTYPES)
    backend: str = field("auto", help="fast = genforge's Llama forward with continuous batching; hf = the model's "
                                      "own forward (batches do not take new requests while running)",
                         choices=BACKENDS)
    threads: int = field(0, help="torch CPU threads; 0 = torch's default")
    log_level: str = field("info", help="log level of the JSON logs on stderr", choices=LOG_LEVELS)
    store: bool = field(True, help="keep requests and responses in the database (needed for feedback, A/B "
                                   "reports and the feedback export)")
    blocklist: list[Path] = field(default_factory=list, help="file of blocked terms, one per line, English or "
                                                             "Chinese (repeatable)")
    moderation_model: Path | None = field(None, help="a `genforge finetune classify` run folder used as a "
                                                     "moderation model on inputs and outputs")
    moderation_labels: list[str] = field(default_factory=list, help="labels of --moderation-model that mean "
                                         "unsafe (default: unsafe, toxic, harmful, offensive, abusive, hate, spam)")
    moderation_threshold: float = field(0.5, help="probability of an unsafe label from which a text is unsafe")
    policy: list[str] = field(default_factory=list, help="what a moderation hit does on a route, as ROUTE=ACTION "
                              "(chat, completions or *; block, redact or flag); default block (repeatable)")
    redact_pii: bool = field(True, help="replace e-mails, phone, ID and card numbers and IPs in outputs by "
                                        "<EMAIL>-style placeholders")
    refusal: str = field("Sorry, I can't help with that.", help="the reply that replaces a blocked request or "
                                                                "answer")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the model folder: --model DIR")
        for key in ("max_batch", "max_queue", "max_prefill_tokens", "max_tokens", "max_body_bytes"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0; got {getattr(self, key)}")
        for key in ("cache_len", "max_prompt_tokens", "rate_limit", "threads", "prefill_chunk"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0 (0 = default/off); got {getattr(self, key)}")
        check_rate_limit(self.rate_limit)
        if self.prefill_chunk > self.max_prefill_tokens:
            raise ConfigError(f"prefill_chunk must be <= max_prefill_tokens ({self.max_prefill_tokens}): a chunk is "
                              f"prompt work between two decode steps; got {self.prefill_chunk}")
        check_threads("threads", self.threads)
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535; got {self.port}")
        if not self.request_timeout > 0:
            raise ConfigError(f"request_timeout must be > 0 seconds; got {self.request_timeout}")
        if not 0 < self.moderation_threshold <= 1:
            raise ConfigError(f"moderation_threshold must be in (0, 1]; got {self.moderation_threshold}")
        from genforge.serve.safety import parse_policies

        parse_policies(list(self.policy))
        names = [v.name for v in self.variants()]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique; got {', '.join(names)} (use --name or another NAME=)")

    def variants(self) -> list[Variant]:
        """Every served folder: --model first (weight 1), then each --variant."""
        main = Variant(self.name or Path(self.model).resolve().name, Path(self.model))
        return [main, *(parse_variant(v) for v in self.variant)]


@dataclass
class KeyCreateConfig(Config):
    name: str = field(None, help="a unique name for the key (who or what uses it)", argument=True)
    rate_limit: int = field(0, help="requests per minute for this key; 0 = the server's --rate-limit")
    db: str | None = field(None, help=f"database URL (default: ${DB_ENV} or sqlite:///~/.genforge/serve.db)")

    def check(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("give the key a name: genforge keys create NAME")
        if self.rate_limit < 0:
            raise ConfigError(f"rate_limit must be >= 0; got {self.rate_limit}")
        check_rate_limit(self.rate_limit)


@dataclass
class KeyListConfig(Config):
    db: str | None = field(None, help=f"database URL (default: ${DB_ENV} or sqlite:///~/.genforge/serve.db)")


@dataclass
class KeyRevokeConfig(Config):
    key: str = field(None, help="name or id of the key to revoke", argument=True)
    db: str | None = field(None, help=f"database URL (default: ${DB_ENV} or sqlite:///~/.genforge/serve.db)")

    def check(self) -> None:
        if not self.key:
            raise ConfigError("name the key to revoke: genforge keys revoke NAME")


def _db_field():
    return field(None, help=f"database URL (default: ${DB_ENV} or sqlite:///~/.genforge/serve.db)")


@dataclass
class AbReportConfig(Config):
    model: str | None = field(None, help="the experiment: the --model name its server was started with (default: "
                                         "the only experiment in the database)")
    out: Path | None = field(None, help="folder for report.json and report.png (default: print only)")
    db: str | None = _db_field()


@dataclass
class AbPromoteConfig(Config):
    variant: str = field(None, help="the variant to shift traffic to", argument=True)
    share: float = field(1.0, help="its share of traffic from now on; the others split the rest by their weights")
    model: str | None = field(None, help="the experiment (default: the only experiment in the database)")
    db: str | None = _db_field()

    def check(self) -> None:
        if not self.variant:
            raise ConfigError("name the variant: genforge ab promote NAME")
        if not 0 < self.share <= 1:
            raise ConfigError(f"share must be in (0, 1]; got {self.share}")


@dataclass
class FeedbackExportConfig(Config):
    out: Path = field(None, help="folder for sft.jsonl, preference.jsonl and the manifest")
    model: str | None = field(None, help="only responses to this model name (default: all)")
    pii: bool = field(True, help="replace e-mails, phones, ID/card numbers and IPs in prompts and corrections by "
                                 "placeholders, as `data prepare` does (served answers are stored redacted)")
    db: str | None = _db_field()

    def check(self) -> None:
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
