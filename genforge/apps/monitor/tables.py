"""The monitor's tables in the serving database (migration `monitor_0001`, a branch off the serving schema).

- `monitor_texts`: one row per distinct normalised text, with its classification: a text seen from many
  sources is classified once.
- `monitor_items`: one row per item received (duplicates included, so volumes count every post), with a
  copy of the text's labels so trend queries read one table. Times are integer UTC epoch seconds, which
  bucket into windows with plain integer arithmetic on SQLite and PostgreSQL alike.
- `monitor_offsets`: how far each stream has been read (file byte offsets, the last evaluated alert window),
  written in the same transaction as the items it covers, so a restart neither loses nor repeats items.
- `monitor_rule_states` (migration `monitor_0002`): each rule's detector state per key (EWMA baseline, windows
  seen, CUSUM sum) as of its evaluated-up-to mark, written with the alerts and the mark, so an evaluation
  folds only the new windows in and the live stream alerts as one replay of the same items would.
- `monitor_alerts`: fired alerts, unique per (rule, key, window), with example items and acknowledgement.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from genforge.serve.db import Base, utcnow


class MonitorText(Base):
    __tablename__ = "monitor_texts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the normalised text
    text: Mapped[str] = mapped_column(Text)
    sentiment: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)  # probability of the sentiment label
    probs: Mapped[str] = mapped_column(Text)  # JSON {label: p}
    seen: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[int] = mapped_column(BigInteger)


class MonitorItem(Base):
    __tablename__ = "monitor_items"
    __table_args__ = (UniqueConstraint("source", "ext_id", name="uq_monitor_items_source_ext_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    t: Mapped[int] = mapped_column(BigInteger, index=True)  # the item's time, UTC epoch seconds
    source: Mapped[str] = mapped_column(String(200))
    ext_id: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the sender's id: retries are no-ops
    entity: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    sentiment: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(String(200), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    duplicate: Mapped[bool] = mapped_column(Boolean)


class MonitorOffset(Base):
    __tablename__ = "monitor_offsets"

    stream: Mapped[str] = mapped_column(String(500), primary_key=True)  # "jsonl:/abs/path", "alerts:RULE", ...
    position: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MonitorRuleState(Base):
    __tablename__ = "monitor_rule_states"

    rule: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    definition: Mapped[str] = mapped_column(String(64))  # rules.definition(): another digest means start over
    position: Mapped[int] = mapped_column(BigInteger)  # the end of the last window folded in (epoch seconds)
    state: Mapped[str] = mapped_column(Text)  # JSON of rules.initial_state() after folding the windows up to position
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MonitorAlert(Base):
    __tablename__ = "monitor_alerts"
    __table_args__ = (UniqueConstraint("rule", "key", "window", name="uq_monitor_alerts_rule_key_window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rule: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # ewma_z | cusum | binomial_cusum | volume | entity_negative
    by: Mapped[str] = mapped_column(String(16))  # topic | entity | all
    key: Mapped[str] = mapped_column(String(200))
    window: Mapped[int] = mapped_column(BigInteger, index=True)  # start of the window, epoch seconds
    width: Mapped[int] = mapped_column(Integer)  # window length in seconds
    value: Mapped[float] = mapped_column(Float)  # what was measured (negative share or count)
    baseline: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)  # z-score, CUSUM statistic or ratio
    count: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    examples: Mapped[str] = mapped_column(Text)  # JSON list of {id, text, sentiment, confidence, source}
    delivered: Mapped[str] = mapped_column(Text, default="{}")  # JSON {channel: "ok" | error}
    acknowledged: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
