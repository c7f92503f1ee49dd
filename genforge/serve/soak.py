"""A soak-test driver for a running `genforge serve`: concurrent clients sending a mix of valid, invalid
and cancelled requests, plus feedback on the answers, for a bounded time (loopback servers only).

Used by tests/serve/test_soak.py (seconds) and benchmarks/soak_serve.py (minutes). The mix, per client
loop, picked by a seeded generator: a chat request then feedback on it; a stream read to the end; a
stream dropped after its first chunk (a cancellation); bad JSON; a bad field; an unknown model.
Every reply is counted by status; 5xx replies are the failures the caller looks for.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

KINDS = ("chat+feedback", "stream", "cancel", "bad-json", "bad-field", "unknown-model")


async def _one(client: Any, url: str, model: str, kind: str, rng: random.Random, out: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": f"question {rng.randrange(1000)}"}]
    if kind == "chat+feedback":
        r = await client.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages,
                                                                   "max_tokens": 8, "user": f"u{rng.randrange(50)}"})
        out["status"][r.status_code] += 1
        if r.status_code == 200:
            body = {"response_id": r.json()["id"], "thumbs": rng.choice(["up", "down"])}
            f = await client.post(f"{url}/v1/feedback", json=body)
            out["status"][f.status_code] += 1
            out["feedback"] += f.status_code == 200
    elif kind in ("stream", "cancel"):
        body = {"model": model, "messages": messages, "max_tokens": 16, "stream": True, "user": f"u{rng.randrange(50)}"}
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            out["status"][r.status_code] += 1
            async for line in r.aiter_lines():
                if kind == "cancel" or line == "data: [DONE]":
                    break  # leaving the block closes the connection: the server cancels the rest
    else:
        if kind == "bad-json":
            r = await client.post(f"{url}/v1/chat/completions", content=b'{"model": ',
                                  headers={"content-type": "application/json"})
        elif kind == "bad-field":
            r = await client.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages,
                                                                       "temperature": 7})
        else:
            r = await client.post(f"{url}/v1/chat/completions", json={"model": "no-such-model", "messages": messages})
        out["status"][r.status_code] += 1


async def soak(url: str, model: str, seconds: float, clients: int = 4, seed: int = 0,
               api_key: str | None = None) -> dict[str, Any]:
    """Run the mix for `seconds`; {"requests", "status": Counter, "feedback": accepted, "errors": [...]}."""
    import httpx

    out: dict[str, Any] = {"status": Counter(), "feedback": 0, "errors": [], "kinds": Counter()}
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def client_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            while time.monotonic() < deadline:
                kind = rng.choice(KINDS)
                out["kinds"][kind] += 1
                try:
                    await _one(client, url, model, kind, rng, out)
                except httpx.HTTPError as e:  # a connection the server dropped is a failure too
                    out["errors"].append(f"{kind}: {type(e).__name__}: {e}")

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    out["requests"] = sum(out["status"].values())
    out["server_errors"] = sum(n for code, n in out["status"].items() if code >= 500)
    return out


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")
