"""Soak test of `genforge serve`: minutes of mixed valid, invalid and cancelled requests with feedback
from concurrent clients (genforge.serve.soak), against a server process of its own on loopback.

Checks the three promises of issue #9: zero 5xx replies, no lost feedback row (every accepted feedback
is in the database afterwards) and stable memory (the server's resident memory, sampled every 10 s,
stops growing: the last third of the run adds less than 5% to the first third's peak).
The short CI variant is tests/serve/test_soak.py.

    .venv/bin/python benchmarks/soak_serve.py [--quick] [--minutes 3] [--clients 8] [--preset tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench_serve import make_model, start, wait_ready

from genforge.serve.soak import rss_mb, soak


async def run(args: argparse.Namespace, url: str, pid: int) -> tuple[dict, list[tuple[float, float]]]:
    samples: list[tuple[float, float]] = []
    began = time.monotonic()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - began, rss_mb(pid)))
            await asyncio.sleep(10 if not args.quick else 2)

    sampler = asyncio.create_task(sample())
    result = await soak(url, "bench", seconds=args.minutes * 60, clients=args.clients, seed=0)
    sampler.cancel()
    samples.append((time.monotonic() - began, rss_mb(pid)))
    return result, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 seconds, 4 clients")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.clients = 1 / 3, 4
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = make_model(work / "model", args.preset)
        proc, url = start("genforge", model, args.threads, 16, work)
        try:
            asyncio.run(wait_ready(url, proc))
            result, samples = asyncio.run(run(args, url, proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
        with sqlite3.connect(work / "serve.db") as db:
            stored = db.execute("SELECT count(*) FROM feedback").fetchone()[0]
    third = max(1, len(samples) // 3)
    early, late = max(m for _, m in samples[:third]), max(m for _, m in samples[-third:])
    print(f"soak: {args.minutes * 60:.0f} s, {args.clients} clients, {result['requests']} requests "
          f"({dict(sorted(result['kinds'].items()))})")
    print(f"status codes: {dict(sorted(result['status'].items()))}; connection errors: {len(result['errors'])}")
    print(f"feedback accepted {result['feedback']}, rows stored {stored}")
    print(f"server memory: {samples[0][1]:.0f} MB at start, early peak {early:.0f} MB, late peak {late:.0f} MB "
          f"({100 * (late / early - 1):+.1f}%)")
    ok = result["server_errors"] == 0 and not result["errors"] and stored == result["feedback"] and late < 1.05 * early
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
