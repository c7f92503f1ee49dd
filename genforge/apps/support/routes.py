"""The assistant on the serving stack: POST /v1/support/chat, the OpenAI model name, tickets, the widget.

`router(desk)` is an APIRouter for `genforge.serve.app.create_app(state, routers=(...))`. Its routes use
the serving stage's `authorize` (keys, rate limits). /v1/chat/completions answers for the assistant's
model name (so any OpenAI client talks to the assistant; the conversation comes in `messages`, `user`
names the session) and hands every other model name on to the serving stage's own handler.
Streams are server-sent events; the widget (ui/widget.html) reads /v1/support/chat's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from genforge.apps.support.service import Desk, Reply, converse
from genforge.apps.support.tables import NoSuchSession, list_tickets, open_session
from genforge.serve import completions
from genforge.serve.app import Authorized
from genforge.serve.errors import ApiError
from genforge.serve.gate import ClosingStream
from genforge.serve.schemas import ChatRequest, JsonBody

WIDGET = Path(__file__).parent / "ui" / "widget.html"


class SupportChat(JsonBody):
    message: str = Field(min_length=1, max_length=8000)
    session_id: str | None = Field(None, max_length=64)
    stream: bool = False


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def summary(r: Reply) -> dict[str, Any]:
    a = r.answer
    return {"object": "support.answer", "session_id": r.session_id, "response_id": r.response_id, "action": a.action,
            "answer": a.text, "confidence": round(a.confidence, 4), "sources": a.sources, "ticket": a.ticket}


def _stream(run: Iterator[str], frame: Any, end: Any) -> Iterator[str]:
    """SSE of a converse() run (`ClosingEvents` closes the run)."""
    while True:
        try:
            piece = next(run)
        except StopIteration as done:
            yield from end(done.value)
            yield "data: [DONE]\n\n"
            return
        if piece:
            yield frame(piece)


class ClosingEvents:
    """The SSE events of a converse() run, each made in the thread pool, and the run closed there however the
    response ends (which stores the turn as far as it went).

    Starlette wraps a sync iterator in an async one whose closing leaves the sync generator open: a stream the
    client dropped was closed (its turn stored, the model's lock freed) only when garbage collected. As the
    body of a `ClosingStream`, this one is closed as soon as the response ends; the close is shielded, as a
    client that leaves while a piece is being made cancels the step that made it. It is a class, not an async
    generator: one closed before its first step (a client gone while the response's start was sent) runs none
    of its code, its `finally` included, and the customer's message was lost."""

    def __init__(self, run: Iterator[str], frame: Any, end: Any):
        self.run = run
        self.events = _stream(run, frame, end)

    def __aiter__(self) -> ClosingEvents:
        return self

    async def __anext__(self) -> str:
        event = await run_in_threadpool(next, self.events, None)
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(self.close)

    def close(self) -> None:
        self.events.close()
        self.run.close()  # stores the turn, even when no piece was asked for (converse's run starts primed)


def _sse(run: Iterator[str], frame: Any, end: Any) -> ClosingStream:
    return ClosingStream(ClosingEvents(run, frame, end), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})


def router(desk: Desk) -> APIRouter:
    api = APIRouter()
    started = time.time()

    @api.post("/v1/support/chat")
    def support_chat(body: SupportChat, caller: Authorized) -> Any:
        _require_text(body.message, "message")
        sid = _session(desk, body.session_id, caller.name, "session_id")
        run = converse(desk, body.message, session_id=sid, caller=caller.name)
        if not body.stream:
            return summary(_drain(run))
        return _sse(run, lambda p: _event({"delta": p}), lambda r: [_event(summary(r))])

    @api.get("/v1/support/tickets")
    def tickets(_: Authorized, status: str = "open", limit: int = 50) -> dict[str, Any]:
        if status not in ("open", "closed", "all"):
            raise ApiError(400, f"status must be open, closed or all; got {status!r}", param="status")
        return {"object": "list", "data": list_tickets(desk.engine, status, min(max(limit, 1), 500))}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest, caller: Authorized) -> Any:
        if body.model != desk.name:
            return await completions.create(request, body, chat=True)
        if body.user and len(body.user) > 64:
            raise ApiError(400, "user names the support session: at most 64 characters", param="user")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if messages[-1]["role"] != "user":
            raise ApiError(400, "the last message must be the customer's (role 'user')", param="messages")
        _require_text(messages[-1]["content"], "messages")
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        sid = await run_in_threadpool(_session, desk, body.user, caller.name, "user")
        run = await run_in_threadpool(converse, desk, messages[-1]["content"], session_id=sid, caller=caller.name,
                                      conversation=messages[:-1], response_id=rid)
        meta = {"id": rid, "created": int(time.time()), "model": desk.name}
        if not body.stream:
            r = await run_in_threadpool(_drain, run)
            return JSONResponse({"object": "chat.completion", **meta,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": r.answer.text},
                                              "logprobs": None, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                                 "genforge": summary(r)})
        chunk = {"object": "chat.completion.chunk", **meta}

        def frame(piece: str) -> str:
            return _event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})

        def end(r: Reply) -> list[str]:
            return [_event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                            "genforge": summary(r)})]

        return _sse(run, frame, end)

    @api.get("/v1/models")
    def models(request: Request, _: Authorized) -> dict[str, Any]:
        """The served models and the assistant, so clients that list models first find it."""
        state = request.app.state.genforge
        served = [{"id": m.name, "object": "model", "created": m.created, "owned_by": "genforge"}
                  for m in state.models.values()]
        return {"object": "list", "data": [{"id": desk.name, "object": "model", "created": int(started),
                                            "owned_by": "genforge", "genforge": {"kind": "support"}}, *served]}

    @api.get("/support", include_in_schema=False)
    def widget() -> FileResponse:
        return FileResponse(WIDGET, media_type="text/html")

    @api.get("/support/config", include_in_schema=False)
    def widget_config(request: Request) -> dict[str, Any]:
        keys = request.app.state.genforge.keys
        return {"name": desk.name, "key_required": keys.static_key is not None or keys.required()}

    return api


def _require_text(message: str, param: str) -> None:
    """An empty or blank customer message is refused: answering it would only open a ticket about nothing."""
    if not message.strip():
        raise ApiError(400, "the customer's message is empty", param=param)


def _session(desk: Desk, session_id: str | None, caller: str, param: str) -> str:
    """The caller's session, opened before the answer starts: another caller's id is a 404 (not a 200 stream that
    fails half-way), the same answer as for an id that does not exist."""
    try:
        return open_session(desk.engine, session_id, caller)
    except NoSuchSession as e:
        raise ApiError(404, str(e), param=param, code="session_not_found") from None


def _drain(run: Iterator[str]) -> Reply:
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value

