"""A stream whose client leaves, whenever it leaves, still runs its cleanup: its sequences are cancelled in
the engine and its response stored once."""

import asyncio
import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.serve.app import create_app
from genforge.serve.db import StoredResponse
from genforge.serve.gate import ClosingStream
from genforge.serve.server import build_state

LONG = {"max_tokens": 30000, "ignore_eos": True, "temperature": 0, "n": 2}  # decodes far longer than any test
BODIES = {"/v1/completions": {"model": "tiny", "prompt": "Hi", "stream": True},
          "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True}}


def drop_while_sending(response_class: type) -> list[str]:
    """Serve a 100-event stream to a client that stalls on the second chunk and then disconnects, as uvicorn
    0.49 (ASGI 2.3) reports it; what the generator's `finally` recorded."""
    cleaned: list[str] = []

    async def events():
        try:
            for i in range(100):
                yield f"data: {i}\n\n"
        finally:
            cleaned.append("closed")

    async def main() -> None:
        first, gone = asyncio.Event(), asyncio.Event()

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                if first.is_set():
                    gone.set()
                    await asyncio.Event().wait()  # the client stalls: this send never returns
                first.set()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        response = response_class(events(), media_type="text/event-stream")
        await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send), 10)
        cleaned.append("returned")  # the response (and its generator) is still referenced here: no GC close

    asyncio.run(main())
    return cleaned


def test_a_dropped_stream_closes_its_generator():
    """Starlette cancels the sending task on a disconnect; a generator paused at its `yield` then never ran
    its `finally`, where genforge cancels the sequence and stores the response (1-3 of 64 dropped streams
    were never stored)."""
    assert drop_while_sending(ClosingStream) == ["closed", "returned"]


def stream_to(state, path: str, body: dict, leave: str | None) -> list[bool]:
    """POST a streaming `body` to the app over `state` at the ASGI level (spec 2.3, as uvicorn 0.49) for a client
    that reads to the end (leave=None) or, once the request's sequences are decoding, stalls and disconnects on
    the response's start ("start") or on its second body chunk ("chunk"). Whether each of those sequences had
    been cancelled when the response returned."""
    app = create_app(state)
    engine = state.models["tiny"].engine
    payload = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}

    async def main() -> list[bool]:
        gone, requested, chunks, decoding = asyncio.Event(), [False], [0], []

        async def send(message: dict) -> None:
            chunks[0] += message["type"] == "http.response.body" and bool(message.get("body"))
            if (leave == "start" and message["type"] == "http.response.start") or (leave == "chunk" and chunks[0] == 2):
                while len(engine.batch.live()) < body["n"]:
                    await asyncio.sleep(0.01)
                decoding.extend(engine.batch.live())
                gone.set()
                await asyncio.Event().wait()  # the client stalls: this send never returns

        async def receive() -> dict:
            if not requested[0]:
                requested[0] = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async with app.router.lifespan_context(app):  # starts and stops the engine, as the server does
            await asyncio.wait_for(app(scope, receive, send), 60)
            return [seq.cancel for seq in decoding]

    return asyncio.run(main())


def stored(state) -> list[tuple[int, list[str]]]:
    with Session(state.keys.engine) as s:
        return [(r.status, json.loads(r.response)) for r in s.scalars(select(StoredResponse))]


@pytest.mark.parametrize("path", list(BODIES))
def test_a_client_gone_before_the_first_event_cancels_its_sequences_and_is_stored(serve_cfg, path):
    """The stream's events were an async generator: closed before its first step (the client left while the
    response's start was being sent) it ran none of its code, its `finally` included, so its sequences decoded
    on to max_tokens and the request never reached the database."""
    state = build_state(serve_cfg(cache_len=32768, max_tokens=30000))
    assert stream_to(state, path, {**BODIES[path], **LONG}, leave="start") == [True, True]
    assert stored(state) == [(499, ["", ""])]


@pytest.mark.parametrize("path", list(BODIES))
def test_a_client_gone_mid_stream_cancels_its_sequences_and_is_stored(serve_cfg, path):
    state = build_state(serve_cfg(cache_len=32768, max_tokens=30000))
    assert stream_to(state, path, {**BODIES[path], **LONG}, leave="chunk") == [True, True]
    assert [status for status, _ in stored(state)] == [499]


@pytest.mark.parametrize("path", list(BODIES))
def test_a_stream_read_to_its_end_is_stored_once_as_answered(serve_cfg, path):
    state = build_state(serve_cfg())
    assert stream_to(state, path, {**BODIES[path], **LONG, "max_tokens": 3}, leave=None) == []
    assert [status for status, _ in stored(state)] == [200]
