"""Two `genforge serve` replicas on one real PostgreSQL database (a throwaway cluster): migrations,
A/B assignment, promotion, feedback and rate limits agree across them."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from genforge.serve.ab import promote
from genforge.serve.abreport import report
from genforge.serve.db import Feedback, StoredResponse, connect
from genforge.serve.keys import RateLimiter


def _chat(url, user):
    return httpx.post(f"{url}/v1/chat/completions", timeout=60,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                            "user": user})


def test_two_replicas_share_one_postgres_database(serve_cfg, live, llama_dir, postgres_url):
    cfg = serve_cfg(db=postgres_url, variant=[f"b={llama_dir}:0.5"])
    with live(cfg) as (url_a, state), live(cfg) as (url_b, _):
        assert state.keys.engine.dialect.name == "postgresql"
        users = [f"user-{i}" for i in range(8)]
        on_a = {u: _chat(url_a, u) for u in users}
        on_b = {u: _chat(url_b, u) for u in users}
        variants = {u: r.headers["x-genforge-variant"] for u, r in on_a.items()}
        assert variants == {u: r.headers["x-genforge-variant"] for u, r in on_b.items()}
        assert set(variants.values()) == {"tiny", "b"}
        for i, u in enumerate(users):  # feedback on a response lands whichever replica takes it
            r = httpx.post(f"{[url_b, url_a][i % 2]}/v1/feedback", timeout=30,
                           json={"response_id": on_a[u].json()["id"], "thumbs": "up" if i % 2 else "down"})
            assert r.status_code == 200, r.text
        with Session(state.keys.engine) as s:
            assert s.scalar(select(func.count()).select_from(StoredResponse)) == 16
            assert s.scalar(select(func.count()).select_from(Feedback)) == 8
        rep = report(state.keys.engine, "tiny")
        assert sum(v["feedback"] for v in rep["variants"]) == 8 and not rep["srm"]["alert"]
        promote(state.keys.engine, "tiny", "b")
        assert {_chat(url, u).headers["x-genforge-variant"] for url in (url_a, url_b) for u in users} == {"b"}


def test_replicas_share_a_callers_rate_limit_on_postgres(postgres_url):
    replicas = [RateLimiter(connect(postgres_url)) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:  # 40 concurrent requests over both replicas, limit 30 a minute
        waits = list(pool.map(lambda i: replicas[i % 2].acquire("pg-caller", 30, now=1000.0), range(40)))
    assert sum(w == 0 for w in waits) == 30
    assert replicas[0].acquire("pg-caller", 30, now=1002.0) == 0  # one token back every two seconds
    assert replicas[1].acquire("pg-caller", 30, now=1002.0) == pytest.approx(2.0)


def test_nul_in_a_request_is_a_400_on_postgres(serve_cfg, live, postgres_url):
    with live(serve_cfg(db=postgres_url)) as (url, _):
        for path, body in (("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a\0"}],
                                                     "max_tokens": 2}),
                           ("/v1/feedback", {"response_id": _chat(url, "u").json()["id"], "comment": "\0"})):
            r = httpx.post(url + path, json=body, timeout=60)
            assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text
