"""Items in: validation, dedup by normalised text, batched classification, one transaction per batch.

A text already classified (the same news from many sources) is counted — an item row marked
`duplicate` with the stored labels — and never classified again. Each batch's items, new texts, seen
counts and the stream offsets they came from are committed together, so after a crash a stream resumes
exactly where its last committed batch ended. Items that carry an id are unique per (source, id): a
client retrying a POST does not count twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, tuple_, update
from sqlalchemy.orm import Session

from genforge.apps.monitor.tables import MonitorItem, MonitorOffset, MonitorText
from genforge.errors import DataError

URL = re.compile(r"https?://\S+")
FIRST_TIME = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
LAST_TIME = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
SPACE = re.compile(r"\s+")


@dataclass
class Item:
    text: str
    t: int  # UTC epoch seconds
    source: str
    entity: str | None = None
    ext_id: str | None = None


def normalise(text: str) -> str:
    """What makes two posts "the same text": NFKC, case, URLs (link shorteners differ per source), spacing."""
    text = unicodedata.normalize("NFKC", text).lower()
    return SPACE.sub(" ", URL.sub(" ", text)).strip()


def digest(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def normalise_entity(value: Any) -> str:
    """How an entity is stored (and how a rule's watched `keys` are read): `aapl` and ` AAPL` are one ticker."""
    return str(value).strip().upper()[:100]


def parse_time(value: Any) -> int:
    """Epoch seconds (int/float, or a numeric string) or an ISO 8601 date/time (UTC when no zone is given),
    within the years 1 to 9999 (what dates can show); ValueError (OverflowError for inf) otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"bad time {value!r}")
    if isinstance(value, int | float):
        t = int(value)
    else:
        text = str(value).strip()
        try:
            t = int(float(text))
        except ValueError:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            t = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    if not FIRST_TIME <= t <= LAST_TIME:
        raise ValueError(f"time {value!r} is outside the years 1 to 9999")
    return t


def parse_item(record: Any, source: str, default_t: int, where: str) -> Item:
    """An Item from a JSON object {text, ts|timestamp|time, source, entity|ticker, id}; DataError naming `where`."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: an item must be a JSON object with a 'text'")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    when = next((record[k] for k in ("ts", "timestamp", "time") if record.get(k) is not None), None)
    try:
        t = default_t if when is None else parse_time(when)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: bad timestamp {when!r} (epoch seconds or ISO 8601)") from None
    entity = record.get("entity") or record.get("ticker")
    ext_id = record.get("id")
    for name, value in (("entity", entity), ("id", ext_id), ("source", record.get("source"))):
        if isinstance(value, dict | list | bool):  # its str() would become a series or a key nobody sent
            raise DataError(f"{where}: '{name}' must be a string or a number, got {type(value).__name__}")
    return Item(text=text, t=t, source=str(record.get("source") or source)[:200],
                entity=normalise_entity(entity) if entity else None,
                ext_id=str(ext_id)[:200] if ext_id is not None else None)


@dataclass
class Monitor:
    """What ingest needs at run time; one chunk (or POST) is classified and written at a time (the lock).

    The file sources are read `chunk` items per transaction, and a chunk's new texts are classified in one
    call, which sorts them by length into forward passes of `batch_size`: passes over texts in arrival order
    pad each to the longest of a mixed batch, half the ingest rate on tweets and news sentences."""

    engine: Engine
    model: Any  # MonitorModel (or anything with classify(texts, batch_size))
    batch_size: int = 64
    chunk: int = 512
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ingest(self, items: list[Item], offsets: dict[str, int] | None = None) -> dict[str, int]:
        with self.lock:
            return ingest(self.engine, self.model, items, offsets or {}, self.batch_size)


def ingest(engine: Engine, model: Any, items: list[Item], offsets: dict[str, int],
           batch_size: int = 64) -> dict[str, int]:
    """Classify and store `items` and move `offsets` in one transaction; {items, classified, duplicates, repeated}."""
    keys = [digest(i.text) for i in items]
    with Session(engine) as session, session.begin():
        ids = [(i.source, i.ext_id) for i in items if i.ext_id is not None]
        repeated: set[tuple[str, str]] = set()
        if ids:
            for chunk in range(0, len(ids), 500):
                rows = session.execute(select(MonitorItem.source, MonitorItem.ext_id).where(
                    tuple_(MonitorItem.source, MonitorItem.ext_id).in_(ids[chunk:chunk + 500])))
                repeated.update((s, e) for s, e in rows)
        known: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for chunk in range(0, len(unique), 500):
            for row in session.execute(select(MonitorText.digest, MonitorText.sentiment, MonitorText.topic,
                                              MonitorText.confidence).where(
                                                  MonitorText.digest.in_(unique[chunk:chunk + 500]))):
                known[row.digest] = {"sentiment": row.sentiment, "topic": row.topic, "confidence": row.confidence}
        fresh: dict[str, Item] = {}
        kept = []
        for item, key in zip(items, keys, strict=True):
            if item.ext_id is not None:
                if (item.source, item.ext_id) in repeated:
                    continue
                repeated.add((item.source, item.ext_id))
            kept.append((item, key))
            if key not in known and key not in fresh:
                fresh[key] = item
        results = model.classify([i.text for i in fresh.values()], batch_size=batch_size) if fresh else []
        if fresh:
            session.execute(insert(MonitorText), [
                {"digest": key, "text": item.text, "sentiment": r["sentiment"], "topic": r["topic"],
                 "confidence": r["confidence"], "probs": json.dumps(r["probs"]), "seen": 0, "first_seen": item.t}
                for (key, item), r in zip(fresh.items(), results, strict=True)])
            known.update({key: r for key, r in zip(fresh, results, strict=True)})
        counts: dict[str, int] = {}
        rows, first = [], set(fresh)
        for item, key in kept:
            counts[key] = counts.get(key, 0) + 1
            label = known[key]
            rows.append({"t": item.t, "source": item.source, "ext_id": item.ext_id, "entity": item.entity,
                         "digest": key, "sentiment": label["sentiment"], "topic": label["topic"],
                         "confidence": label["confidence"], "duplicate": key not in first})
            first.discard(key)
        if rows:
            session.execute(insert(MonitorItem), rows)
            texts = MonitorText.__table__
            session.connection().execute(update(texts).where(texts.c.digest == bindparam("d")).values(
                seen=texts.c.seen + bindparam("n")), [{"d": k, "n": n} for k, n in counts.items()])
        for stream, position in offsets.items():
            session.merge(MonitorOffset(stream=stream, position=position))
    return {"items": len(rows), "classified": len(fresh), "duplicates": len(rows) - len(fresh),
            "repeated": len(items) - len(rows)}


def read_offset(engine: Engine, stream: str) -> int:
    with Session(engine) as session:
        row = session.get(MonitorOffset, stream)
        return row.position if row else 0
