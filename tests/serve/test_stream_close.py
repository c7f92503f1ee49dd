"""A stream whose client leaves while a chunk is being sent still runs its generator's cleanup."""

import asyncio

from genforge.serve.gate import ClosingStream


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
