"""One conversational turn with everything around the assistant: safety, sessions, tickets, records.

`converse(desk, message, ...)` is what both the HTTP routes and `genforge app support ask` run:
the serving stage's input moderation on the customer's message; the session's history from the
database (a session is its first caller's: another caller naming it is refused as unknown); the
assistant's answer through the serving stage's output guard (moderation and PII redaction of every
answer, streamed or not; the cited passages' text, which reaches the client and the database too, through
the same blocklist and PII redaction; a blocked answer cites nothing); a hand-off ticket when the
assistant hands off; the turn stored as a serving `responses` row (so thumbs on /v1/feedback and
`genforge feedback export` work on support answers like on any chat answer) with its safety decisions in
the audit table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from genforge.apps.support.assistant import Answer, Assistant
from genforge.apps.support.config import HANDOFF
from genforge.apps.support.tables import add_turns, history, open_session, open_ticket
from genforge.serve.safety import OutputGuard, Safety
from genforge.serve.store import Record, save


@dataclass
class Desk:
    assistant: Assistant
    engine: Any  # the serving database
    safety: Safety = field(default_factory=lambda: Safety(redact_pii=True))
    name: str = "support"  # the model name answers are stored under
    max_new_tokens: int = 160


@dataclass
class Reply:
    session_id: str
    response_id: str
    answer: Answer
    decisions: list = field(default_factory=list)


def converse(desk: Desk, message: str, *, session_id: str | None = None, caller: str = "anonymous",
             conversation: list[dict[str, str]] | None = None,
             response_id: str | None = None) -> Generator[str, None, Reply]:
    """Yield the answer's text as it is released; return the Reply. `conversation` (OpenAI clients send the
    whole dialogue) replaces the stored session history."""
    started = time.monotonic()
    first: list[float] = []
    safety, decisions = desk.safety, []
    sid = open_session(desk.engine, session_id, caller)
    if safety.checks_input:
        decision = safety.filter("chat", message, "input")
        decisions.append(decision)
        if decision.action == "redact":
            message = decision.text
    past = history(desk.engine, sid) if conversation is None else [m for m in conversation if m["role"] != "system"]
    dialogue = [*past, {"role": "user", "content": message}]
    if decisions and decisions[0].action == "block":
        answer = Answer("blocked", safety.refusal, reason="input moderation")
        yield answer.text
    else:
        guard = OutputGuard(safety, "chat") if safety.checks_output else None
        run = desk.assistant.stream(dialogue, desk.max_new_tokens)
        while True:
            try:
                piece = next(run)
            except StopIteration as end:
                answer = end.value
                break
            piece = guard.push(piece) if guard else piece
            if piece:
                first = first or [time.monotonic()]
                yield piece
        if answer.action == "handoff":
            answer.ticket = open_ticket(desk.engine, sid, message, answer.reason, dialogue)
            answer.text = HANDOFF.format(ticket=answer.ticket)
            yield answer.text  # our own words: nothing to moderate
        elif guard is not None:
            decision = guard.finish()
            decisions.append(decision)
            if decision.text:
                yield decision.text
            if decision.action == "block":
                answer.action, answer.text, answer.sources = "blocked", safety.refusal, []
                yield "\n" + safety.refusal
            else:
                answer.text = guard.sent
                answer.sources = [{**c, "text": safety.filter("chat", c["text"], "output", classify=False).text}
                                  for c in answer.sources]
    rid = response_id or f"chatcmpl-{uuid.uuid4().hex}"
    save(desk.engine, Record(id=rid, route="chat", model=desk.name, variant=desk.name, weights_id=None, user=sid,
                             caller=caller, request={"messages": dialogue, "params": {"support": answer.action}},
                             texts=[answer.text], finish=["stop" if answer.action != "blocked" else "content_filter"],
                             status=200, prompt_tokens=0, completion_tokens=0, latency=time.monotonic() - started,
                             ttft=first[0] - started if first else None, decisions=decisions))
    add_turns(desk.engine, sid, message, answer, rid)
    return Reply(sid, rid, answer, decisions)


def reply(desk: Desk, message: str, **kwargs: Any) -> Reply:
    run = converse(desk, message, **kwargs)
    while True:
        try:
            next(run)
        except StopIteration as end:
            return end.value
