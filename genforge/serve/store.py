"""Rows the server writes: each completions/chat request with its answer (the A/B impression, with
latency and tokens), the safety decisions made on it, and users' feedback on it.

Handlers call these from a worker thread (`run_in_threadpool`): they are blocking database calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.db import Audit, Feedback, StoredResponse


@dataclass
class Record:
    id: str
    route: str  # "chat" | "completions"
    model: str  # the name asked for (an experiment or a variant)
    variant: str  # the folder that answered
    weights_id: int | None
    user: str | None
    caller: str
    request: dict[str, Any]
    texts: list[str]
    finish: list[str]
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency: float
    ttft: float | None
    decisions: list[Any] = field(default_factory=list)  # safety.Decision


def save(engine: Engine, rec: Record, store: bool = True) -> None:
    """The response row (unless `store` is off) and one audit row per safety decision, in one transaction."""
    with Session(engine) as session:
        if store:
            session.add(StoredResponse(
                id=rec.id, route=rec.route, model=rec.model, variant=rec.variant, weights_id=rec.weights_id,
                user=rec.user, caller=rec.caller, request=json.dumps(rec.request, ensure_ascii=False),
                response=json.dumps(rec.texts, ensure_ascii=False), finish=",".join(rec.finish)[:200],
                status=rec.status, prompt_tokens=rec.prompt_tokens, completion_tokens=rec.completion_tokens,
                latency=rec.latency, ttft=rec.ttft))
        for d in rec.decisions:
            session.add(Audit(response_id=rec.id, route=rec.route, stage=d.stage, action=d.action,
                              reasons=json.dumps(d.reasons, ensure_ascii=False),
                              review="pending" if d.action == "flag" else None, user=rec.user, caller=rec.caller))
        session.commit()


def add_feedback(engine: Engine, response_id: str, caller: str, *, choice: int = 0, thumbs: str | None = None,
                 rating: int | None = None, comment: str | None = None, correction: str | None = None) -> int | None:
    """Store one piece of feedback on choice `choice` of a response; its id, or None when no stored response
    has that id. A choice the response does not have is a ConfigError."""
    positive = (thumbs == "up") if thumbs else (rating >= 4 if rating is not None else None)
    with Session(engine) as session:
        response = session.get(StoredResponse, response_id)
        if response is None:
            return None
        try:
            n = len(json.loads(response.response))
        except (ValueError, TypeError):  # a row edited by hand: `feedback export` names it; one choice here
            n = 1
        if not 0 <= choice < n:  # a negative index would rate the last answer
            raise ConfigError(f"response '{response_id}' has {n} choice{'s' * (n != 1)}: choice must be 0 to {n - 1}")
        row = Feedback(response_id=response_id, choice=choice, thumbs=thumbs, rating=rating, positive=positive,
                       comment=comment, correction=correction, caller=caller)
        session.add(row)
        session.commit()
        return row.id
