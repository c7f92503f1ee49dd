"""What surrounds the model in a completions/chat request: the A/B arm that answers, the safety checks of
the input (block, redact, flag), the refusal of a blocked request, and the output guard of a stream.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from genforge.serve.models import ServedModel
from genforge.serve.safety import Decision
from genforge.serve.schemas import as_list

if TYPE_CHECKING:
    from genforge.serve.completions import Choice, Run

class ClosingStream(StreamingResponse):
    """A streaming response that closes its event generator however the response ends.

    Under an ASGI server older than spec 2.4 (uvicorn 0.49) Starlette cancels the sending task when the
    client disconnects. A generator paused at a `yield` then never ran its `finally` (unless the garbage
    collector happened to close it), so a dropped stream's sequence was not cancelled nor its response
    stored: 1-3 of 64 streams dropped at once went missing from the database.
    A body whose cleanup must run even when the client left before the first event (under any ASGI spec the
    response's start can be the send that fails) does it in its own `aclose`, as completions.EventStream does:
    closing an async generator that never started runs none of its code, its `finally` included."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


SEVERITY = ("allow", "flag", "redact", "block")
VARIANT_HEADER = "X-Genforge-Variant"


async def route(state: Any, body: Any) -> tuple[ServedModel, int | None]:
    """The model that answers: an A/B arm for the experiment's name (sticky per `user`), else the one named."""
    experiment = state.experiment
    if experiment is not None and body.model == experiment.name:
        arm, weights_id = await run_in_threadpool(experiment.choose, body.user)
        return state.model(arm), weights_id
    return state.model(body.model), None


def texts_of(body: Any, chat: bool) -> list[str]:
    """The texts a request sends (message contents, or string prompts), in order."""
    if chat:
        return [m.text() for m in body.messages]
    return [p for p in as_list(body.prompt, "prompt") if isinstance(p, str)]


def redact_input(body: Any, chat: bool, texts: list[str]) -> None:
    """Put the redacted texts back where `texts_of` took them from (token-id prompts stay as they are)."""
    if chat:
        for message, text in zip(body.messages, texts, strict=True):
            message.content = text
    elif isinstance(body.prompt, str):
        body.prompt = texts[0]
    else:
        replaced = iter(texts)
        body.prompt = [next(replaced) if isinstance(p, str) else p for p in body.prompt]


async def check_input(state: Any, body: Any, chat: bool) -> Decision | None:
    """The input decision (None when no input check is configured); a redaction is applied to `body`."""
    safety = state.safety
    texts = texts_of(body, chat)
    if not safety.checks_input or not texts:
        return None
    route = "chat" if chat else "completions"
    decisions = [await run_in_threadpool(safety.filter, route, t, "input") for t in texts]
    worst = max(decisions, key=lambda d: SEVERITY.index(d.action))
    if worst.action == "redact":
        redact_input(body, chat, [d.text for d in decisions])
    return Decision("input", worst.action, [r for d in decisions for r in d.reasons])


def request_json(body: Any, chat: bool) -> dict[str, Any]:
    keep = ("max_tokens", "temperature", "top_p", "n", "stop", "seed")
    params = {k: getattr(body, k) for k in keep if getattr(body, k, None) is not None}
    if chat:
        return {"messages": [{"role": m.role, "content": m.text()} for m in body.messages], "params": params}
    return {"prompt": body.prompt, "params": params}


async def refuse(run: Run, body: Any, chat: bool, headers: dict[str, str]) -> Any:
    """The answer to a blocked request: the refusal as every choice, finish_reason "content_filter"."""
    refusal = run.request.app.state.genforge.safety.refusal
    count = body.n * (1 if chat else len(as_list(body.prompt, "prompt")))
    run.texts = [refusal] * count
    await run.save(200, finish=["content_filter"] * count)
    meta, obj = run.meta, "chat.completion" if chat else "text_completion"
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if body.stream:
        def events() -> list[str]:
            chunks = []
            for i in range(count):
                delta = {"delta": {"role": "assistant", "content": refusal}} if chat else {"text": refusal}
                chunks.append(sse_event({**meta, "object": f"{obj}.chunk" if chat else obj, "choices": [
                    {"index": i, **delta, "logprobs": None, "finish_reason": "content_filter"}]}))
            return [*chunks, "data: [DONE]\n\n"]

        return StreamingResponse(iter(events()), media_type="text/event-stream", headers=headers)
    item = (lambda i: {"index": i, "message": {"role": "assistant", "content": refusal}}) if chat else \
           (lambda i: {"index": i, "text": refusal})
    return JSONResponse({**meta, "object": obj, "usage": usage, "choices": [
        {**item(i), "logprobs": None, "finish_reason": "content_filter"} for i in range(count)]}, headers=headers)


async def guarded(run: Run, ch: Choice, piece: str) -> str:
    """A stream's piece through the choice's output guard: held back, filtered, or ended by a block."""
    guard = ch.guard
    if guard is None:
        return piece
    piece = guard.push(piece)
    if guard.blocked and not ch.finish:
        ch.finish = "content_filter"
        run.served.engine.cancel([ch.seq])
    if ch.finish and not ch.judged:
        ch.judged = True
        decision = await run_in_threadpool(guard.finish)
        run.decisions.append(decision)
        if decision.action == "block":
            ch.finish = "content_filter"
        piece += decision.text
    return piece


def sse_event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
