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

import dataclasses
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


@dataclass
class Turn:
    """One turn as it goes: what the caller has been sent so far, and the answer once the assistant gave it."""

    session_id: str
    response_id: str
    caller: str
    message: str
    dialogue: list[dict[str, str]]
    decisions: list
    started: float
    first: float | None = None  # when the assistant's first piece came
    sent: list[str] = field(default_factory=list)
    answer: Answer | None = None


def converse(desk: Desk, message: str, *, session_id: str | None = None, caller: str = "anonymous",
             conversation: list[dict[str, str]] | None = None,
             response_id: str | None = None) -> Generator[str, None, Reply]:
    """Begin a turn and return its run, which yields the answer's text as it is released and returns the Reply.
    `conversation` (OpenAI clients send the whole dialogue) replaces the stored session history.

    The turn begins here (the session, input moderation, the history); the answer begins at the run's first
    step. Closed before its end (a client that leaves a stream: the routes close it at once), the run stores the
    turn as far as it went: status 499, what the client was sent, and the hand-off's ticket if one was opened.
    Closed before its first step (a client gone before the first piece was asked for), it stores the customer's
    message with nothing sent, and no answer is made."""
    started = time.monotonic()
    safety, decisions = desk.safety, []
    sid = open_session(desk.engine, session_id, caller)
    if safety.checks_input:
        decision = safety.filter("chat", message, "input")
        decisions.append(decision)
        if decision.action == "redact":
            message = decision.text
    past = history(desk.engine, sid) if conversation is None else [m for m in conversation if m["role"] != "system"]
    turn = Turn(sid, response_id or f"chatcmpl-{uuid.uuid4().hex}", caller, message,
                [*past, {"role": "user", "content": message}], decisions, started)
    run = _run(desk, turn)
    next(run)  # to its first yield: a generator closed before its first step runs none of its code (nor stores)
    return run


def _run(desk: Desk, turn: Turn) -> Generator[str, None, Reply]:
    """converse()'s run: its first step (taken by converse) stops before the answer starts; the turn is stored
    from there on, however the run ends."""
    pieces = _answer(desk, turn)
    try:
        yield ""
        for piece in pieces:
            turn.sent.append(piece)
            yield piece
    except GeneratorExit:
        pieces.close()
        _store(desk, turn, 499)
        raise
    _store(desk, turn, 200)
    return Reply(turn.session_id, turn.response_id, turn.answer, turn.decisions)


def _answer(desk: Desk, turn: Turn) -> Generator[str, None, None]:
    """The answer's pieces through the safety checks; `turn.answer` is set as soon as the assistant has answered
    (before the hand-off message or the guard's last words are yielded)."""
    safety, message, dialogue = desk.safety, turn.message, turn.dialogue
    if turn.decisions and turn.decisions[0].action == "block":
        turn.answer = Answer("blocked", safety.refusal, reason="input moderation")
        yield turn.answer.text
        return
    guard = OutputGuard(safety, "chat") if safety.checks_output else None
    run = desk.assistant.stream(dialogue, desk.max_new_tokens)
    try:
        while True:
            try:
                piece = next(run)
            except StopIteration as end:
                answer = turn.answer = end.value
                break
            piece = guard.push(piece) if guard else piece
            if piece:
                turn.first = turn.first or time.monotonic()
                yield piece
    finally:
        run.close()  # closed mid-answer, the assistant's run frees the model's lock now, not when collected
    if answer.action == "handoff":
        answer.ticket = open_ticket(desk.engine, turn.session_id, message, answer.reason, dialogue)
        answer.text = HANDOFF.format(ticket=answer.ticket)
        yield answer.text  # our own words: nothing to moderate
    elif guard is not None:
        decision = guard.finish()
        turn.decisions.append(decision)
        if decision.text:
            yield decision.text
        if decision.action == "block":
            answer.action, answer.text, answer.sources = "blocked", safety.refusal, []
            yield "\n" + safety.refusal
        else:
            answer.text = guard.sent
            answer.sources = [{**c, "text": safety.filter("chat", c["text"], "output", classify=False).text}
                              for c in answer.sources]


def _store(desk: Desk, turn: Turn, status: int) -> None:
    """The turn as a serving `responses` row (with its safety decisions) and as the session's two turns. A turn
    cut short (499) keeps what the client was sent, under the assistant's action if it had answered (a hand-off
    keeps its ticket), else "cancelled"."""
    if status == 200:
        answer = turn.answer
        finish = "stop" if answer.action != "blocked" else "content_filter"
    else:
        sent = "".join(turn.sent)
        answer = dataclasses.replace(turn.answer, text=sent) if turn.answer else Answer("cancelled", sent)
        finish = "cancelled"
    save(desk.engine, Record(id=turn.response_id, route="chat", model=desk.name, variant=desk.name, weights_id=None,
                             user=turn.session_id, caller=turn.caller,
                             request={"messages": turn.dialogue, "params": {"support": answer.action}},
                             texts=[answer.text], finish=[finish], status=status, prompt_tokens=0,
                             completion_tokens=0, latency=time.monotonic() - turn.started,
                             ttft=turn.first - turn.started if turn.first else None, decisions=turn.decisions))
    add_turns(desk.engine, turn.session_id, turn.message, answer, turn.response_id)


def reply(desk: Desk, message: str, **kwargs: Any) -> Reply:
    run = converse(desk, message, **kwargs)
    while True:
        try:
            next(run)
        except StopIteration as end:
            return end.value
