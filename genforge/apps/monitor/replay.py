"""`genforge app monitor replay`: a timed stream from labelled texts, with negative surges injected.

Each hour, each key (an entity, or in the benchmark a topic) gets a Poisson-like number of items
(uniform in [per_hour/2, 3 per_hour/2]); an item is drawn from the key's negative texts with the base
negative share, or `factor` times it while a surge of that key runs. The surges (key, start, end) are
written beside the stream as the truth an alerting evaluation scores against. Texts repeat (they are
drawn with replacement), as the same news does across sources: the monitor counts repeats without
classifying them again.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import typer

from genforge.apps.monitor.config import SURGE_FROM_HOUR, SURGE_TAIL_HOURS, MonitorReplayConfig
from genforge.apps.monitor.ingest import parse_time
from genforge.artifacts import atomic_open, begin_output, write_json, write_manifest
from genforge.errors import ConfigError, DataError

H = 3600


def plan_surges(keys: list[str], days: int, count: int, hours: int, rng: random.Random, start: int) -> list[dict]:
    """Up to `count` surges after two days of baseline, keys in turn, never within 12 hours of another on one
    key (a surge that finds no room in 100 draws is left out: the caller compares the count)."""
    surges: list[dict] = []
    for i in range(count):
        key = keys[i % len(keys)]
        for _ in range(100):
            s = start + rng.randrange(SURGE_FROM_HOUR, days * 24 - hours - SURGE_TAIL_HOURS) * H
            if all(o["key"] != key or s >= o["end"] + 12 * H or s + hours * H + 12 * H <= o["start"] for o in surges):
                surges.append({"key": key, "start": s, "end": s + hours * H})
                break
    return surges


def make_stream(pool: dict[str, tuple[list[str], list[str]]], *, days: int, per_hour: int, base: float,
                factor: float, surges: list[dict], rng: random.Random, start: int):
    """Yield one hour of items at a time: [(t, key, text)], in time order. `pool`: key -> (negative, other) texts."""
    for hour in range(days * 24):
        h0 = start + hour * H
        items = []
        for key, (neg, other) in pool.items():
            share = base * (factor if any(s["key"] == key and s["start"] <= h0 < s["end"] for s in surges) else 1)
            for _ in range(rng.randint(per_hour // 2, per_hour * 3 // 2)):
                items.append((h0 + rng.randrange(H), key, rng.choice(neg if rng.random() < share else other)))
        yield sorted(items)


def replay(cfg: MonitorReplayConfig) -> Path:
    from genforge.apps.monitor.config import SENTIMENTS
    from genforge.apps.monitor.train import labelled

    try:
        start = parse_time(cfg.start)
    except (ValueError, OverflowError):
        raise ConfigError(f"bad --start {cfg.start!r}: give an ISO 8601 date/time such as 2026-01-05T00:00:00Z, "
                          "or epoch seconds") from None
    rows = labelled(cfg.data, False, SENTIMENTS)
    rng = random.Random(cfg.seed)
    pool: dict[str, tuple[list[str], list[str]]] = {e: ([], []) for e in cfg.entities}
    for text, label in rows:
        pool[rng.choice(cfg.entities)][0 if label == "negative" else 1].append(text)
    if any(not neg or not other for neg, other in pool.values()):
        raise DataError("every entity needs negative and other texts: give more data or fewer --entities")
    surges = plan_surges(cfg.entities, cfg.days, cfg.surges, cfg.surge_hours, rng, start)
    if len(surges) < cfg.surges:  # surges.json holds the ones made: say so, the replay is still sound
        typer.secho(f"warning: only {len(surges)} of {cfg.surges} surges of {cfg.surge_hours} hours fit in "
                    f"{cfg.days} days over {len(cfg.entities)} entities (12 hours apart on one entity); for more, "
                    "give more --days or --entities or shorter --surge-hours", fg="yellow", err=True)
    started = begin_output(cfg.out, "app.monitor.replay")
    n = 0
    with atomic_open(cfg.out / "stream.jsonl") as f:
        for hour in make_stream(pool, days=cfg.days, per_hour=cfg.per_hour, base=cfg.base, factor=cfg.factor,
                                surges=surges, rng=rng, start=start):
            for t, key, text in hour:
                record: dict[str, Any] = {"id": f"replay-{n}", "text": text, "ts": t, "entity": key,
                                          "source": "replay"}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
    write_json(cfg.out / "surges.json", surges)
    write_manifest(cfg.out, "app.monitor.replay", cfg, started=started, metrics={"items": n, "surges": len(surges)})
    print(f"wrote {n} items over {cfg.days} days with {len(surges)} surges to {cfg.out / 'stream.jsonl'}")
    return cfg.out
