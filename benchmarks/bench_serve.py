"""Serving under load: `genforge serve` (continuous batching) vs transformers `generate` behind FastAPI.

Three servers, all streaming, with 1, 4, 16 and 64 concurrent clients. Same model (the `small` preset,
random weights, a genforge BPE tokenizer of tiny-shakespeare), same prompts (tiny-shakespeare passages),
greedy, fixed-length completions (EOS ignored), the same torch threads. Each server is its own process;
the clients run here (asyncio + httpx), each client sending its requests one after another. Per level:
aggregate tokens/s = completion tokens of all requests / wall time; TTFT = time to the first streamed
chunk with text; latency = time to `data: [DONE]`. genforge runs with its defaults: responses stored,
PII redaction of the streams on (a word is held until it ends, a long run without a break until it is 65
characters long, see docs/serve.md).
The baselines (see `baseline_app`): `hf-naive` runs `generate` per request, serialised: the reference
issue #9 set, which leaves batching's speed-up unused. `hf-static` runs the requests that queued
meanwhile as one left-padded batch per `generate` (static batching: a running batch takes no one in).
Ratios are printed against both.
Goal (issue #9): at 16 clients >= 4x the naive baseline's tokens/s and p99 TTFT < 1 s.

    .venv/bin/python benchmarks/bench_serve.py [--quick] [--threads 1] [--clients 1 4 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
VOCAB, CONTEXT = 8192, 512
SERVERS = ("hf-naive", "hf-static", "genforge")  # run in this order, one at a time


def make_model(folder: Path, preset: str) -> Path:
    """A random `preset` Llama with a BPE tokenizer trained on tiny-shakespeare, saved as an HF folder."""
    import torch

    from genforge.data.tokenizer import build_bpe, wrap_for_transformers
    from genforge.models.presets import build_model, model_config

    text = TEXT.read_text(encoding="utf-8")
    tok = wrap_for_transformers(build_bpe(iter(text.split("\n\n")), VOCAB, show_progress=False))
    torch.manual_seed(0)
    cfg = model_config("clm", preset, vocab_size=len(tok), max_positions=CONTEXT,
                       special_ids={"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id})
    build_model(cfg, "clm").save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def prompts(n: int) -> list[str]:
    """`n` passages of 1-4 lines of tiny-shakespeare (about 10-60 tokens)."""
    lines = [line for line in TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    return ["\n".join(lines[37 * i:37 * i + 1 + i % 4]) for i in range(n)]


def baseline_app(model_dir: str, threads: int, static_batch: int):
    """An HF baseline server: transformers `model.generate` behind FastAPI, streaming SSE.

    static_batch 0, the naive server: per request, `generate` in a thread, the calls serialised by a lock.
    static_batch N, static batching: one worker takes the requests that queued while its last `generate`
    ran (up to N), left-pads them into one batch and runs one `generate` for it; requests arriving
    meanwhile wait for the next batch. transformers streams a batch through one streamer, which hands each
    step's tokens to their requests as the step ends: a request's TTFT is its wait for the running batch,
    then its batch's prefill and first step.
    """
    import queue
    import threading

    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, padding_side="left")
    app = FastAPI()

    class Streamer:  # transformers' streamer protocol: put(prompt), then put(one token per row) per step, end()
        def __init__(self, rows: list[queue.Queue]) -> None:
            self.rows = rows
            self.prompt_seen = False

        def put(self, value) -> None:
            if self.prompt_seen:
                for row, token in zip(self.rows, value.reshape(-1).tolist(), strict=True):
                    row.put(token)
            self.prompt_seen = True

        def end(self) -> None:
            for row in self.rows:
                row.put(None)

    def generate(prompts: list[list[int]], max_tokens: int, streamer: Streamer) -> None:
        batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=max_tokens, do_sample=False, eos_token_id=None,
                           pad_token_id=tok.pad_token_id, streamer=streamer)

    if static_batch:
        pending: queue.Queue = queue.Queue()

        def worker() -> None:
            while True:
                jobs = [pending.get()]
                while len(jobs) < static_batch and not pending.empty():
                    jobs.append(pending.get())
                prompts, limits, rows = zip(*jobs, strict=True)
                generate(list(prompts), max(limits), Streamer(list(rows)))

        threading.Thread(target=worker, daemon=True).start()

        def submit(prompt: list[int], max_tokens: int, row: queue.Queue) -> None:
            pending.put((prompt, max_tokens, row))
    else:
        lock = threading.Lock()

        def submit(prompt: list[int], max_tokens: int, row: queue.Queue) -> None:
            def work() -> None:
                with lock:
                    generate([prompt], max_tokens, Streamer([row]))

            threading.Thread(target=work, daemon=True).start()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/completions")
    def complete(body: dict) -> StreamingResponse:
        row: queue.Queue = queue.Queue()
        submit(tok(body["prompt"]).input_ids, body["max_tokens"], row)

        def events():
            count = 0  # a row of a batch with longer requests stops at its own max_tokens
            while count < body["max_tokens"] and (token := row.get()) is not None:
                count += 1
                chunk = {"choices": [{"index": 0, "text": tok.decode([token]), "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': count}})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: Path, threads: int, max_batch: int, workdir: Path,
          redact_pii: bool = True) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "genforge":
        cmd = [sys.executable, "-m", "genforge.cli", "serve", "--model", str(model_dir), "--name", "bench",
               "--port", str(port), "--threads", str(threads), "--max-batch", str(max_batch),
               "--cache-len", str(CONTEXT), "--max-queue", "1024", "--log-level", "warning",
               "--db", f"sqlite:///{workdir / 'serve.db'}"] + ([] if redact_pii else ["--no-redact-pii"])
    else:
        cmd = [sys.executable, __file__, "--baseline-server", str(model_dir), "--port", str(port),
               "--threads", str(threads), "--static-batch", str(max_batch if kind == "hf-static" else 0)]
    with open(workdir / f"{kind}.log", "w") as log:  # the child keeps its own copy of the file
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server {url} exited with code {proc.returncode}; see {' '.join(proc.args[:4])}")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"server {url} did not start in {seconds:.0f} s")


async def one_request(client, url: str, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, latency, completion tokens) of one streamed completion."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    started, first, used = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter()
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return (first or end) - started, end - started, used


async def level(url: str, clients: int, rounds: int, tokens: int, texts: list[str]) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def user(i: int) -> list[tuple[float, float, int]]:
            return [await one_request(client, url, texts[(i * rounds + r) % len(texts)], tokens)
                    for r in range(rounds)]

        started = time.perf_counter()
        results = [x for xs in await asyncio.gather(*(user(i) for i in range(clients))) for x in xs]
        wall = time.perf_counter() - started
    ttft, latency = sorted(r[0] for r in results), sorted(r[1] for r in results)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    return {"tok_s": sum(r[2] for r in results) / wall, "requests": len(results),
            "tokens": sum(r[2] for r in results), "ttft50": statistics.median(ttft), "ttft99": pct(ttft, 0.99),
            "lat50": statistics.median(latency), "lat99": pct(latency, 0.99)}


async def bench(args: argparse.Namespace, model_dir: Path, workdir: Path) -> None:
    texts = prompts(256)
    rows = []
    for kind in SERVERS:
        proc, url = start(kind, model_dir, args.threads, max(args.clients), workdir, not args.no_redact_pii)
        try:
            await wait_ready(url, proc)
            await level(url, 1, 1, 4, texts)  # warm-up
            for clients in args.clients:
                stats = await level(url, clients, args.rounds, args.tokens, texts)
                rows.append({"server": kind, "clients": clients, **stats})
                print(f"  {kind:<9} {clients:>3} clients: {stats['tok_s']:7.0f} tok/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\n{'clients':>7} {'server':<9} {'requests':>8} {'tok/s':>8} {'vs naive':>8} {'vs static':>9} "
          f"{'TTFT p50':>9} {'TTFT p99':>9} {'lat p50':>8} {'lat p99':>8}")
    rate = {(r["server"], r["clients"]): r["tok_s"] for r in rows}
    for r in sorted(rows, key=lambda r: (r["clients"], SERVERS.index(r["server"]))):
        naive, static = rate[("hf-naive", r["clients"])], rate[("hf-static", r["clients"])]
        print(f"{r['clients']:>7} {r['server']:<9} {r['requests']:>8} {r['tok_s']:>8.0f} {r['tok_s'] / naive:>7.2f}x "
              f"{r['tok_s'] / static:>8.2f}x {r['ttft50']:>8.3f}s {r['ttft99']:>8.3f}s "
              f"{r['lat50']:>7.2f}s {r['lat99']:>7.2f}s")
    ours = next((r for r in rows if r["server"] == "genforge" and r["clients"] == 16), None)
    if ours:
        ratio = ours["tok_s"] / rate[("hf-naive", 16)]
        verdict = "met" if ratio >= 4 and ours["ttft99"] < 1 else "missed"
        print(f"\ngoal at 16 clients (>= 4x the naive baseline's tok/s, p99 TTFT < 1 s): {verdict} "
              f"({ratio:.2f}x, p99 TTFT {ours['ttft99']:.3f} s); "
              f"vs static batching {ours['tok_s'] / rate[('hf-static', 16)]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1, 4, 16 clients, 32 tokens, one round")
    ap.add_argument("--preset", default="small", help="model preset (default small)")
    ap.add_argument("--clients", type=int, nargs="*", default=None, help="concurrency levels (default 1 4 16 64)")
    ap.add_argument("--tokens", type=int, default=None, help="completion tokens per request (default 128; quick 32)")
    ap.add_argument("--rounds", type=int, default=None, help="requests per client (default 2; quick 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each server (default 1)")
    ap.add_argument("--no-redact-pii", action="store_true",
                    help="serve genforge without PII redaction, as the baselines (which redact nothing) run")
    ap.add_argument("--baseline-server", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--static-batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        import uvicorn

        app = baseline_app(args.baseline_server, args.threads, args.static_batch)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    args.clients = args.clients or ([1, 4, 16] if args.quick else [1, 4, 16, 64])
    args.tokens = args.tokens or (32 if args.quick else 128)
    args.rounds = args.rounds or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = make_model(workdir / "model", args.preset)
        print(f"preset {args.preset}, {args.tokens} tokens per request, {args.rounds} request(s) per client, "
              f"{args.threads} torch thread(s) per server, {os.cpu_count()} CPUs", flush=True)
        asyncio.run(bench(args, model_dir, workdir))


if __name__ == "__main__":
    main()
