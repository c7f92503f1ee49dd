"""API keys: managed keys in the database (create, list, revoke, look up), the static key, rate limits.

A request is authorised by an OpenAI-style `Authorization: Bearer KEY` header. Keys are required as
soon as a static key is configured or the database holds a managed key, so creating the first key with
`genforge keys create` closes an open server without a restart; revoked keys still count, so revoking
the last key does not open the server again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.db import ApiKey, RateBucket, utcnow

KEY_PREFIX = "gf-"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's name ("static" for the --api-key, "anonymous" on an open server)."""

    name: str
    rate_limit: int  # requests per minute; 0 = unlimited


def _row(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "rate_limit": key.rate_limit,
            "created": key.created.isoformat(timespec="seconds"),
            "revoked": key.revoked.isoformat(timespec="seconds") if key.revoked else None}


RESERVED_NAMES = ("static", "anonymous")


def create_key(engine: Engine, name: str, rate_limit: int | None = None) -> tuple[dict[str, Any], str]:
    """(the stored row, the secret key): the secret is shown once and never stored."""
    if name.strip() in RESERVED_NAMES:  # they name the --api-key and open-server callers: rate buckets, rows
        raise ConfigError(f"the key name {name.strip()!r} is reserved; pick another name")
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(name=name.strip(), prefix=secret[:10], digest=digest(secret), rate_limit=rate_limit or None)
    with Session(engine) as session:
        session.add(key)
        try:
            session.commit()
        except IntegrityError:
            raise ConfigError(f"a key named {name!r} already exists; pick another name") from None
        return _row(key), secret


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        return [_row(k) for k in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(engine: Engine, name_or_id: str) -> dict[str, Any]:
    """Revoke by name (or numeric id): the key's row plus `already_revoked`. Revoking twice is an idempotent
    success that keeps the first revocation time, and `already_revoked` lets the caller say so honestly."""
    with Session(engine) as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == name_or_id))
        if key is None and name_or_id.isdigit():
            key = session.get(ApiKey, int(name_or_id))
        if key is None:
            raise ConfigError(f"no key named {name_or_id!r} (see `genforge keys list`)")
        already_revoked = key.revoked is not None
        if not already_revoked:
            key.revoked = utcnow()
            session.commit()
        return {**_row(key), "already_revoked": already_revoked}


class Keys:
    """The server's authority: checks bearer keys against the static key and the database."""

    def __init__(self, engine: Engine, static_key: str | None = None, default_rate_limit: int = 0):
        self.engine = engine
        self.static_key = static_key or None
        self.default_rate_limit = default_rate_limit

    def required(self) -> bool:
        if self.static_key is not None:
            return True
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(ApiKey)) > 0

    def check(self, secret: str | None) -> Caller | None:
        """The caller a key belongs to, or None if the key is missing, unknown or revoked (while keys are required)."""
        if secret and self.static_key and hmac.compare_digest(secret.encode(), self.static_key.encode()):
            return Caller("static", self.default_rate_limit)
        if secret:
            with Session(self.engine) as session:
                key = session.scalar(select(ApiKey).where(ApiKey.digest == digest(secret),
                                                          ApiKey.revoked.is_(None)))
            if key is not None:
                return Caller(key.name, key.rate_limit or self.default_rate_limit)
        if not self.required():
            return Caller("anonymous", 0)
        return None


class RateLimiter:
    """Token buckets per caller: `limit` requests per minute, bursts up to `limit`. The buckets are rows of the
    server's database, so replicas sharing a PostgreSQL database share each caller's limit; one conditional
    UPDATE takes a token (atomic under concurrent replicas: the row is locked while it is checked)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, name: str, limit: int, now: float | None = None) -> float:
        """0 if the request may go ahead (and takes a token), else the seconds until a token is free."""
        if limit <= 0:
            return 0.0
        now = time.time() if now is None else now  # wall clock: replicas on several machines share it
        later = RateBucket.updated < now  # a replica whose clock is behind refills nothing and moves no clock back
        elapsed = case((later, now - RateBucket.updated), else_=0.0)
        refilled = case((RateBucket.tokens + elapsed * limit / 60 > limit, float(limit)),
                        else_=RateBucket.tokens + elapsed * limit / 60)
        mine = RateBucket.name == name
        with self.engine.begin() as conn:
            fresh = {"name": name, "tokens": float(limit), "updated": now}
            conn.execute(_insert(conn.dialect.name)(RateBucket).values(**fresh).on_conflict_do_nothing())
            if conn.execute(update(RateBucket).where(mine, refilled >= 1)
                            .values(tokens=refilled - 1, updated=case((later, now), else_=RateBucket.updated))
                            ).rowcount:
                return 0.0
            tokens = conn.execute(select(refilled).where(mine)).scalar_one()
        return (1 - tokens) * 60 / limit


def _insert(dialect: str) -> Any:
    """The INSERT construct with ON CONFLICT of the database's dialect (SQLite or PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
