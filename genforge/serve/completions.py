"""POST /v1/completions and /v1/chat/completions: prompts to sequences on the engine, back as JSON or SSE.

A request becomes n sequences per prompt, queued on the model's engine all at once (or refused with
429). Text is assembled here, on the event loop, from the token ids the worker appends: incremental
detokenisation (whole UTF-8 pieces) and stop strings; a stop string ends its sequence in the engine.
The handler also watches the client: a closed connection cancels the request's sequences.
Around the model (gate.py): the A/B arm that answers, the input checks and the output guard of streams;
when the request ends it is stored with its answer, timing and safety decisions (store.py), before a
stream's `data: [DONE]`, so feedback on it can follow at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from genforge.generate.config import SamplingParams
from genforge.generate.detokenize import TextStream, decode
from genforge.serve import gate
from genforge.serve.batch import Seq
from genforge.serve.engine import EngineDown, QueueFull
from genforge.serve.errors import ApiError, database_unavailable, error_body
from genforge.serve.models import ServedModel
from genforge.serve.safety import Decision, OutputGuard
from genforge.serve.schemas import ChatRequest, CompletionRequest, as_list
from genforge.serve.store import Record, save

log = logging.getLogger("genforge.serve")
FINISH = {"eos": "stop", "length": "length"}
FAILURES = {"timeout": (504, "the request took longer than the server's request timeout"),
            "error": (500, "the model failed while generating; see the server log"),
            "cancelled": (503, "the server is shutting down")}
POLL_SECONDS = 0.5  # how often a waiting handler checks that its client is still connected


@dataclass(eq=False)
class Choice:
    """One sequence seen from the handler: the text released so far and its OpenAI finish reason."""

    seq: Seq
    text: TextStream | None  # None: decode once at the end (no streaming, no stop strings)
    read: int = 0  # tokens of seq.tokens taken so far
    used: int = 0  # tokens that count as completion tokens (up to a stop string)
    finish: str | None = None
    failure: str | None = None  # "timeout" | "error" | "cancelled"
    guard: OutputGuard | None = None  # streams under output checks: text held back until it is safe
    judged: bool = False  # the guard's final decision is taken

    def pull(self) -> str:
        """Newly released text; sets `finish` once the sequence has ended (or hit a stop string)."""
        if self.finish or self.failure:  # also "content_filter", set by the handler
            return ""
        reason = self.seq.finish_reason  # read before the tokens: the worker appends, then finishes
        tokens = self.seq.tokens[self.read:]
        self.read += len(tokens)
        piece = ""
        for token in tokens:
            self.used += 1
            if self.text is not None:
                piece += self.text.push(token)
                if self.text.stopped:
                    self.finish = "stop"
                    return piece
        if reason in FAILURES:
            self.failure = reason
        elif reason:
            self.finish = FINISH[reason]
            if self.text is not None:
                piece += self.text.flush()
        return piece

    def completion(self, tokenizer: Any) -> str:
        return self.text.released if self.text is not None else decode(tokenizer, self.seq.tokens)


def _prompt_ids(served: ServedModel, body: CompletionRequest | ChatRequest, chat: bool) -> list[list[int]]:
    tok = served.tokenizer
    if chat:
        if not served.chat:
            raise ApiError(400, f"model '{served.name}' has no chat template; use /v1/completions", param="messages")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # jinja raises TemplateError or anything the template chooses
            raise ApiError(400, f"the chat template refused the messages: {e}", param="messages") from None
        return [list(tok(text, add_special_tokens=False)["input_ids"])]
    prompts = []
    vocab = served.decoder.runner.vocab_size
    for item in as_list(body.prompt, "prompt"):
        if isinstance(item, str):
            prompts.append(served.decoder.encode(item))
        elif not item or any(not 0 <= i < vocab for i in item):
            raise ApiError(400, f"token prompts must be non-empty lists of ids in [0, {vocab})", param="prompt")
        else:
            prompts.append(list(item))
    return prompts


def _budget(served: ServedModel, body: Any, chat: bool, prompt: list[int], limits: Any) -> int:
    param = "messages" if chat else "prompt"
    longest = served.engine.longest
    most_prompt = min(limits.max_prompt_tokens or longest, longest - 1)
    if len(prompt) > most_prompt:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this model accepts at most {most_prompt}",
                       param=param, code="context_length_exceeded")
    asked = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise ApiError(400, f"max_tokens may be at most {limits.max_tokens}; got {asked}", param="max_tokens")
    asked = asked or (limits.max_tokens if chat else 16)
    return min(asked, longest - len(prompt))


def _sequences(served: ServedModel, body: Any, chat: bool, limits: Any, wake: Any, watch: bool) -> list[Seq]:
    prompts = _prompt_ids(served, body, chat)
    if len(prompts) * body.n > served.engine.max_queue:
        raise ApiError(400, f"{len(prompts)} prompts x n={body.n} exceeds the server's queue of "
                            f"{served.engine.max_queue} sequences", param="n")
    stop_ids = frozenset() if body.ignore_eos else frozenset(served.decoder.stop_ids(chat))
    deadline = time.monotonic() + limits.request_timeout
    seqs = []
    for prompt in prompts:
        budget = _budget(served, body, chat, prompt, limits)
        for i in range(body.n):
            seed = None if body.seed is None else (body.seed + i) % 2**63
            params = SamplingParams(temperature=body.temperature, top_k=max(body.top_k, 0), top_p=body.top_p,
                                    repetition_penalty=body.repetition_penalty, seed=seed)
            seqs.append(Seq(prompt=prompt, params=params, max_tokens=budget, stop_ids=stop_ids,
                            deadline=deadline, wake=wake, watch=watch))
    return seqs


def _waker(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Any:
    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(event.set)

    return wake


async def create(request: Request, body: CompletionRequest | ChatRequest, chat: bool) -> Any:
    """Run one completions or chat request; a StreamingResponse when `stream` is set."""
    state = request.app.state.genforge
    body.refuse_unsupported()
    served, weights_id = await gate.route(state, body)
    if served.kind != "lm":
        article = "an" if served.kind == "encoder" else "a"
        raise ApiError(400, f"model '{served.name}' is {article} {served.kind}, not a causal LM; it serves "
                            f"{'/v1/classify and ' if served.kind == 'classifier' else ''}/v1/embeddings",
                       param="model")
    started = time.monotonic()
    meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": body.model}
    headers = {gate.VARIANT_HEADER: served.name}
    decision = await gate.check_input(state, body, chat)
    event = asyncio.Event()
    stops = body.stops()
    watch = bool(body.stream or stops)  # text is needed as it comes: wake up on every token
    if decision is not None and decision.action == "block":
        seqs: list[Seq] = []
    else:
        seqs = _sequences(served, body, chat, state.cfg, _waker(asyncio.get_running_loop(), event), watch)
    guarded = body.stream and state.safety.checks_output
    route = "chat" if chat else "completions"
    choices = [Choice(s, TextStream(served.tokenizer, tuple(stops)) if watch else None,
                      guard=OutputGuard(state.safety, route) if guarded else None) for s in seqs]
    try:
        served.engine.submit(seqs)
    except QueueFull as e:
        raise ApiError(429, f"model '{served.name}' is busy: {e}", code="queue_full",
                       headers={"Retry-After": str(math.ceil(e.retry_after))}) from None
    except EngineDown as e:
        raise ApiError(503, str(e), code="model_unavailable") from None
    prompt_tokens = sum(len(s.prompt) for s in seqs[::body.n])
    state.metrics.tokens.labels(served.name, "prompt").inc(prompt_tokens)
    run = Run(request, served, choices, event, started, prompt_tokens, body.user, chat=chat, meta=meta,
              weights_id=weights_id, request_json=gate.request_json(body, chat),
              decisions=[decision] if decision is not None else [])
    if not seqs:
        return await gate.refuse(run, body, chat, headers)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return gate.ClosingStream(EventStream(run, meta, chat, include_usage), media_type="text/event-stream",
                                  headers={"Cache-Control": "no-cache", **headers})
    if not await run.collect():
        await run.save(499)
        return JSONResponse(error_body(499, "client closed the request"), status_code=499)
    failure = run.failure()
    if failure:
        status, message = FAILURES[failure]
        await run.save(status)
        raise ApiError(status, message, code=failure)
    out = []
    for i, ch in enumerate(choices):
        text = ch.completion(served.tokenizer)
        if state.safety.checks_output:
            judged = await run_in_threadpool(state.safety.filter, route, text, "output")
            run.decisions.append(judged)
            text = judged.text
            if judged.action == "block":
                ch.finish = "content_filter"
        run.texts.append(text)
        item = {"index": i, "message": {"role": "assistant", "content": text}} if chat else {"index": i, "text": text}
        out.append({**item, "logprobs": None, "finish_reason": ch.finish})
    run.finish()
    await run.save(200)
    return JSONResponse({**meta, "object": "chat.completion" if chat else "text_completion", "choices": out,
                         "usage": run.usage()}, headers=headers)


@dataclass(eq=False)
class Run:
    """A request in flight: its choices, the wake-up event, and the timing for metrics and logs."""

    request: Request
    served: ServedModel
    choices: list[Choice]
    event: asyncio.Event
    started: float
    prompt_tokens: int
    user: str | None = None
    checked: float = 0.0  # when the client's connection was last checked
    chat: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    weights_id: int | None = None
    request_json: dict[str, Any] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # what each choice answered, as sent
    saved: bool = False

    def record(self, status: int, finish: list[str] | None = None) -> Record:
        firsts = [ch.seq.first_token for ch in self.choices if ch.seq.first_token]
        caller = getattr(self.request.state, "caller", None)
        texts = self.texts or [ch.text.released if ch.text is not None else "" for ch in self.choices]
        return Record(id=self.meta["id"], route="chat" if self.chat else "completions", model=self.meta["model"],
                      variant=self.served.name, weights_id=self.weights_id, user=self.user,
                      caller=caller.name if caller else "anonymous", request=self.request_json, texts=texts,
                      finish=finish or [ch.finish or ch.failure or "cancelled" for ch in self.choices], status=status,
                      prompt_tokens=self.prompt_tokens, completion_tokens=sum(ch.used for ch in self.choices),
                      latency=time.monotonic() - self.started,
                      ttft=min(firsts) - self.started if firsts else None, decisions=self.decisions)

    async def save(self, status: int, finish: list[str] | None = None) -> None:
        """Store the request, its answer and its safety decisions (once)."""
        if not self.saved:
            self.saved = True
            state = self.request.app.state.genforge
            await run_in_threadpool(save, state.keys.engine, self.record(status, finish), state.cfg.store)

    def save_now(self, status: int) -> None:
        """`save` without awaiting, for a stream ended by its client (its close may run in a cancelled task)."""
        if not self.saved:
            self.saved = True
            state = self.request.app.state.genforge
            try:
                save(state.keys.engine, self.record(status), state.cfg.store)
            except Exception:  # the database is down: the response is lost, the server goes on
                log.exception("could not store the response of a closed stream")

    async def wait(self) -> bool:
        """Wait for the worker's next wake-up; False if the client disconnected meanwhile.

        The connection is checked every POLL_SECONDS even while wake-ups keep coming (a busy stream).
        """
        while True:
            if time.monotonic() - self.checked >= POLL_SECONDS:
                self.checked = time.monotonic()
                if await self.request.is_disconnected():
                    return False
            try:
                await asyncio.wait_for(self.event.wait(), POLL_SECONDS)
            except TimeoutError:
                continue
            self.event.clear()
            return True

    def pull(self) -> list[str]:
        pieces = [ch.pull() for ch in self.choices]
        stopped = [ch.seq for ch in self.choices if ch.finish in ("stop", "content_filter")
                   and ch.seq.finish_reason is None]
        if stopped:
            self.served.engine.cancel(stopped)
        return pieces

    def done(self) -> bool:
        return all(ch.finish or ch.failure for ch in self.choices)

    def failure(self) -> str | None:
        return next((ch.failure for ch in self.choices if ch.failure), None)

    async def collect(self) -> bool:
        """Wait until every choice is done; False (and the sequences cancelled) if the client left."""
        try:
            while True:
                self.pull()
                if self.done():
                    return True
                if not await self.wait():
                    return False
        finally:
            self.cancel()

    def cancel(self) -> None:
        live = [ch.seq for ch in self.choices if ch.seq.finish_reason is None]
        if live:
            self.served.engine.cancel(live)

    def usage(self) -> dict[str, int]:
        completion = sum(ch.used for ch in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def finish(self) -> None:
        """Record a completed request: time to first token (metric) and one log line."""
        firsts = [ch.seq.first_token for ch in self.choices if ch.seq.first_token]
        ttft = min(firsts) - self.started if firsts else None
        if ttft is not None:
            self.request.app.state.genforge.metrics.ttft.labels(self.served.name).observe(ttft)
        log.info("completion", extra={"model": self.meta.get("model"), "variant": self.served.name, "user": self.user,
                                      **self.usage(),
                                      "finish_reasons": [ch.finish or ch.failure for ch in self.choices],
                                      "ttft_ms": None if ttft is None else round(1000 * ttft),
                                      "seconds": round(time.monotonic() - self.started, 3)})


class EventStream:
    """Server-sent events: a chunk per released piece, a final chunk per choice, optional usage, [DONE].

    The response is stored before [DONE], so a client may send feedback on it as soon as the stream ends.
    As the body of a `ClosingStream` it is closed however the response ends, and its close cancels the
    sequences and stores the response with status 499 unless it was stored already. It is a class, not an
    async generator: one closed before its first step (a client gone while the response's start was sent)
    runs none of its code, its `finally` included, so its sequences decoded on to max_tokens and the request
    never reached the database."""

    def __init__(self, run: Run, meta: dict[str, Any], chat: bool, include_usage: bool):
        self.run = run
        self.sent = [""] * len(run.choices)  # the text sent of each choice: what a 499 row stores
        self.events = self._events(meta, chat, include_usage)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> str:
        return await self.events.__anext__()

    async def aclose(self) -> None:
        try:
            await self.events.aclose()
        finally:
            self.run.cancel()
            if not self.run.saved:
                self.run.texts = self.sent
                self.run.save_now(499)

    async def _events(self, meta: dict[str, Any], chat: bool, include_usage: bool) -> AsyncIterator[str]:
        run, sent = self.run, self.sent
        obj = "chat.completion.chunk" if chat else "text_completion"
        usage = {"usage": None} if include_usage else {}

        def chunk(index: int, text: str, finish: str | None = None) -> str:
            choice = {"index": index, "delta": {"content": text} if text or not finish else {}} if chat else \
                     {"index": index, "text": text}
            return gate.sse_event({**meta, "object": obj, "choices": [{**choice, "logprobs": None,
                                                                        "finish_reason": finish}], **usage})

        try:
            if chat:
                for i in range(len(run.choices)):
                    yield gate.sse_event({**meta, "object": obj, "choices": [{"index": i, "delta": {
                        "role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}], **usage})
            closed: set[int] = set()
            while True:
                pieces = run.pull()
                failure = run.failure()
                if failure:
                    status, message = FAILURES[failure]
                    run.texts = sent
                    await run.save(status)
                    yield gate.sse_event(error_body(status, message, code=failure))
                    return
                for i, (ch, piece) in enumerate(zip(run.choices, pieces, strict=True)):
                    piece = await gate.guarded(run, ch, piece)
                    if piece:
                        sent[i] += piece
                        yield chunk(i, piece)
                    if ch.finish and i not in closed:
                        closed.add(i)
                        yield chunk(i, "", ch.finish)
                if run.done():
                    break
                if not await run.wait():
                    return
            if include_usage:
                yield gate.sse_event({**meta, "object": obj, "choices": [], "usage": run.usage()})
            run.finish()
            run.texts = sent
            await run.save(200)
            yield "data: [DONE]\n\n"
        except OperationalError as e:  # the response could not be stored: the client learns it cannot rate it
            error = database_unavailable(e)
            log.warning(error.message)
            yield gate.sse_event(error.body())
