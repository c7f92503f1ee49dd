"""The serving database (SQLAlchemy 2): API keys, stored requests/responses, feedback, A/B weights, audit.

One URL names it: SQLite by default (a file, WAL journal so readers never wait for the one writer),
PostgreSQL (`postgresql+psycopg://...`) when several replicas share it. The schema is owned by the
Alembic migrations in genforge/serve/migrations: `connect` runs `upgrade head` programmatically, so a
new genforge version upgrades an old database on start (and refuses one a newer genforge wrote); the classes
here mirror the latest migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from genforge import __version__
from genforge.errors import ConfigError
from genforge.serve.config import DB_ENV

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"  # the serving core's schema (api_keys), created before Alembic came in
PG_LOCK = 7_372_001  # advisory lock id: replicas starting together migrate one at a time


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKey(Base):
    """A managed bearer key. Only its SHA-256 is stored: keys are 190-bit random, so a plain hash suffices
    (no salt or slow hash needed against guessing) and lookups stay one indexed query."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters, to recognise it in lists
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests/minute; None = default
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StoredResponse(Base):
    """One completions/chat request and what was answered: an A/B impression with its latency and tokens."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the OpenAI id: chatcmpl-... / cmpl-...
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    route: Mapped[str] = mapped_column(String(16))  # "chat" | "completions"
    model: Mapped[str] = mapped_column(String(200), index=True)  # the name the client asked for
    variant: Mapped[str] = mapped_column(String(200))  # the folder that answered
    weights_id: Mapped[int | None] = mapped_column(ForeignKey("ab_weights.id"), nullable=True)
    user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    caller: Mapped[str] = mapped_column(String(200))
    request: Mapped[str] = mapped_column(Text)  # JSON: {"messages": [...]} or {"prompt": ...}
    response: Mapped[str] = mapped_column(Text)  # JSON list of the choices' texts
    finish: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)  # 200, or 499 (client left), 504 (timeout), ...
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency: Mapped[float] = mapped_column(Float)  # seconds, request to last token
    ttft: Mapped[float | None] = mapped_column(Float, nullable=True)  # seconds to the first token


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id"), index=True)
    choice: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # which of the response's choices
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    thumbs: Mapped[str | None] = mapped_column(String(4), nullable=True)  # "up" | "down"
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1..5
    positive: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # up or rating >= 4; None: comment only
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)  # the answer the user would have wanted
    caller: Mapped[str] = mapped_column(String(200))


class RateBucket(Base):
    """A caller's token bucket, shared by every replica on the database (`--rate-limit`, managed keys' limits)."""

    __tablename__ = "rate_buckets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # the caller (key name, or "static")
    tokens: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)  # Unix time of the last refill: one clock for all replicas


class AbWeights(Base):
    """The traffic weights of an experiment over time; the newest row is in force (promotions append)."""

    __tablename__ = "ab_weights"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment: Mapped[str] = mapped_column(String(200), index=True)
    weights: Mapped[str] = mapped_column(Text)  # JSON {variant: weight}
    reason: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Audit(Base):
    """One safety decision: what was checked, what was found and what the policy did."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    response_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    route: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(8))  # "input" | "output"
    action: Mapped[str] = mapped_column(String(8))  # "allow" | "block" | "redact" | "flag"
    reasons: Mapped[str] = mapped_column(Text)  # JSON list: "blocklist:TERM", "classifier:LABEL=0.93", "pii:EMAIL"
    review: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "pending" when flagged
    user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    caller: Mapped[str] = mapped_column(String(200))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")  # wait for a writer in another process instead of failing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine) -> None:
    """`alembic upgrade heads` on `engine`; a database made by the core before Alembic is stamped first.

    "heads", not "head": each application (genforge/apps/*) adds its tables as its own migration branch
    off the serving schema, so the apps never have to agree on one linear revision order.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_LOCK})
        refuse_newer(conn, engine)
        cfg.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "api_keys" in tables and "alembic_version" not in tables:
            command.stamp(cfg, FIRST_REVISION)
        command.upgrade(cfg, "heads")


def refuse_newer(conn: Connection, engine: Engine) -> None:
    """A ConfigError when the database is at a revision these migrations do not know: a newer genforge wrote
    it, and Alembic would only fail with "Can't locate revision"."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    unknown = sorted(set(MigrationContext.configure(conn).get_current_heads()) - known)
    if unknown:
        raise ConfigError(f"the database {engine.url!r} has schema revision {', '.join(unknown)}, newer than this "
                          f"genforge ({__version__}) knows: upgrade genforge or use another --db")


def connect(url: str, create: bool = True) -> Engine:
    """An engine on `url` with the schema migrated to the latest; a SQLite file's folder is made if missing.

    `create=False` is for commands that work on what a server recorded (`feedback export`, `ab report|promote`,
    `keys list|revoke`): a missing SQLite file is a ConfigError rather than a new empty database that would make
    a mistyped --db look like "no data"."""
    try:
        engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    except (ArgumentError, ValueError) as e:
        raise ConfigError(f"bad database URL {url!r}: {e}") from None
    except ImportError as e:
        raise ConfigError(f"database URL {url!r} needs a driver that is not installed: {e}") from None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            path = Path(database).expanduser()
            if not create and not path.is_file():
                raise ConfigError(f"database {path} does not exist (check --db or ${DB_ENV})")
            path.parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        migrate(engine)
    except SQLAlchemyError as e:
        raise ConfigError(f"cannot open database {engine.url!r}: {str(e).splitlines()[0]}") from None
    return engine
