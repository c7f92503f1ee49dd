"""Robustness: a short soak (mixed valid, invalid and cancelled requests with feedback: no 5xx, no lost
feedback row, memory that levels off) and a schemathesis run over the OpenAPI schema (no 500s).
The minutes-long soak is benchmarks/soak_serve.py."""

import asyncio

import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from genforge.serve.db import Feedback
from genforge.serve.soak import rss_mb, soak


def test_short_soak_has_no_server_errors_and_keeps_every_feedback(serve_cfg, live):
    with live(serve_cfg(max_tokens=32)) as (url, state):
        warm = asyncio.run(soak(url, "tiny", seconds=4, clients=4, seed=1))
        before = rss_mb()
        result = asyncio.run(soak(url, "tiny", seconds=12, clients=4, seed=2))
        grown = rss_mb() - before
        with Session(state.keys.engine) as s:
            stored = s.scalar(select(func.count()).select_from(Feedback))
    assert result["errors"] == [] and result["server_errors"] == 0, result
    assert set(result["kinds"]) == {"chat+feedback", "stream", "cancel", "bad-json", "bad-field", "unknown-model"}
    assert result["status"][400] > 0 and result["status"][404] > 0 and result["feedback"] > 0
    assert stored == warm["feedback"] + result["feedback"]
    assert grown < 100, f"resident memory grew {grown:.0f} MB during the soak"


def test_openapi_schema_fuzzing_finds_no_server_error(serve_cfg, live):
    with live(serve_cfg(max_tokens=16, max_batch=4)) as (url, _):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures, calls = [], []
        for operation in schema.get_all_operations():
            op = operation.ok()
            fuzz(op, failures, calls)
    assert {"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/feedback", "POST /v1/embeddings",
            "POST /v1/classify", "GET /v1/ab/report"} <= set(calls)
    assert failures == []


def fuzz(op, failures: list[str], calls: list[str]) -> None:
    """Up to 15 generated requests for one operation; any 5xx reply is a failure."""

    @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def run(case):
        response = case.call(timeout=60)
        calls.append(op.label)
        if response.status_code >= 500:
            failures.append(f"{op.label}: {response.status_code} {response.text[:200]}")

    run()
