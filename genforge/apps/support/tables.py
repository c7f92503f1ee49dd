"""The assistant's rows in the serving database: sessions, their turns, and hand-off tickets.

Tables are SQLAlchemy classes on the serving Base; the schema is owned by the migration branch
`support` (genforge/serve/migrations/versions/support_0001.py), applied by `genforge.serve.db.connect`.
A session's turns are what multi-turn answering reads back (query rewriting from the last turns); a
ticket keeps the question and the whole transcript so the person taking it needs nothing else.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from genforge.errors import ConfigError
from genforge.serve.db import Base, utcnow


class SupportSession(Base):
    __tablename__ = "support_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    caller: Mapped[str] = mapped_column(String(200))


class SupportTurn(Base):
    __tablename__ = "support_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("support_sessions.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant"
    content: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)  # faq | generate | handoff | blocked | cancelled
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    sources: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of cited passages
    response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # responses.id (feedback)


class Ticket(Base):
    __tablename__ = "support_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("support_sessions.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | closed
    reason: Mapped[str] = mapped_column(String(200))
    question: Mapped[str] = mapped_column(Text)
    transcript: Mapped[str] = mapped_column(Text)  # JSON list of {role, content}
    closed: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NoSuchSession(ConfigError):
    """A session id that another caller opened: its turns are that customer's, so it is refused as unknown
    (a refusal that names the owner would tell the caller the id exists)."""


def open_session(engine: Engine, session_id: str | None, caller: str) -> str:
    """The id of an existing session of `caller`, or of a new one (a client-chosen id is created on first use)."""
    sid = session_id or uuid.uuid4().hex
    if len(sid) > 64:
        raise ConfigError(f"session id too long ({len(sid)} characters; at most 64)")
    with Session(engine) as s:
        row = s.get(SupportSession, sid)
        if row is None:
            s.add(SupportSession(id=sid, caller=caller))
            try:
                s.commit()
            except IntegrityError:  # a concurrent first request created it: theirs stands
                s.rollback()
                row = s.get(SupportSession, sid)
        if row is not None and row.caller != caller:
            raise NoSuchSession(f"no such session: {sid!r}")
    return sid


def history(engine: Engine, session_id: str, last: int = 8) -> list[dict[str, str]]:
    """The session's last `last` turns as chat messages, oldest first."""
    with Session(engine) as s:
        rows = s.scalars(select(SupportTurn).where(SupportTurn.session_id == session_id)
                         .order_by(SupportTurn.id.desc()).limit(last)).all()
    return [{"role": r.role, "content": r.content} for r in reversed(rows)]


def add_turns(engine: Engine, session_id: str, question: str, answer: Any, response_id: str | None) -> None:
    """The user's message and the assistant's answer (an assistant.Answer) in one transaction."""
    with Session(engine) as s:
        s.add(SupportTurn(session_id=session_id, role="user", content=question))
        s.add(SupportTurn(session_id=session_id, role="assistant", content=answer.text, action=answer.action,
                          confidence=answer.confidence, response_id=response_id,
                          sources=json.dumps(answer.sources, ensure_ascii=False)))
        s.commit()


def open_ticket(engine: Engine, session_id: str, question: str, reason: str, transcript: list[dict]) -> int:
    with Session(engine) as s:
        row = Ticket(session_id=session_id, reason=reason[:200], question=question,
                     transcript=json.dumps(transcript, ensure_ascii=False))
        s.add(row)
        s.commit()
        return row.id


def list_tickets(engine: Engine, status: str = "open", limit: int = 50) -> list[dict[str, Any]]:
    with Session(engine) as s:
        query = select(Ticket).order_by(Ticket.id.desc()).limit(limit)
        if status != "all":
            query = query.where(Ticket.status == status)
        return [{"id": t.id, "session": t.session_id, "created": t.created, "status": t.status, "reason": t.reason,
                 "question": t.question, "transcript": json.loads(t.transcript)} for t in s.scalars(query)]


def close_ticket(engine: Engine, ticket_id: int) -> bool:
    """Close one ticket; False when no open ticket has that id."""
    with Session(engine) as s:
        row = s.get(Ticket, ticket_id)
        if row is None or row.status != "open":
            return False
        row.status, row.closed = "closed", utcnow()
        s.commit()
        return True
