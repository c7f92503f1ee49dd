"""Prometheus metrics of a server, in a registry of its own (two apps in one process do not collide).

Served at GET /metrics in the Prometheus text format: requests and latency per route and status,
time to first token, prompt/completion tokens, finished sequences by reason, queue depth, batch size.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("genforge_requests", "HTTP requests by route and status code", ["route", "code"],
                                registry=r)
        self.latency = Histogram("genforge_request_seconds", "HTTP request duration, until the last byte",
                                 ["route"], buckets=SECONDS, registry=r)
        self.ttft = Histogram("genforge_time_to_first_token_seconds", "time from request to first generated text",
                              ["model"], buckets=SECONDS, registry=r)
        self.tokens = Counter("genforge_tokens", "tokens by model and kind (prompt, completion)", ["model", "kind"],
                              registry=r)
        self.sequences = Counter("genforge_sequences", "finished sequences by model and finish reason "
                                 "(eos, length, cancelled, timeout, error)", ["model", "reason"], registry=r)
        self.queue = Gauge("genforge_queue_depth", "sequences waiting for a batch slot", ["model"], registry=r)
        self.batch = Gauge("genforge_batch_size", "sequences in the running batch", ["model"], registry=r)
        self.batch_rows = Histogram("genforge_batch_rows", "sequences advanced per decode step", ["model"],
                                    buckets=ROWS, registry=r)

    def step(self, model: str, *, running: int, queued: int, stepped: int, tokens: int,
             finished: list[str]) -> None:
        """Called by an engine's worker after each pass of its loop."""
        self.queue.labels(model).set(queued)
        self.batch.labels(model).set(running)
        if stepped:
            self.batch_rows.labels(model).observe(stepped)
        if tokens:
            self.tokens.labels(model, "completion").inc(tokens)
        for reason in finished:
            self.sequences.labels(model, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
