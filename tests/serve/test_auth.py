"""API keys: the static key, managed keys (create/list/revoke through the API and the CLI, stored hashed),
per-key rate limits, and the refusal to listen on a non-loopback host without any key."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.errors import ConfigError
from genforge.serve.config import ServeConfig
from genforge.serve.db import ApiKey, connect
from genforge.serve.keys import Keys, RateLimiter, create_key, digest, list_keys, revoke_key
from genforge.serve.server import check_exposure, serve, warn_idle_rate_limit


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch):
    monkeypatch.delenv("GENFORGE_API_KEY", raising=False)


def test_keys_are_stored_hashed_and_revocable(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'k.db'}")
    row, secret = create_key(engine, "alice", rate_limit=5)
    assert secret.startswith("gf-") and len(secret) > 30 and row["prefix"] == secret[:10]
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        stored = session.query(ApiKey).one()
        assert stored.digest == digest(secret) and secret not in (stored.digest, stored.prefix, stored.name)
    keys = Keys(engine)
    assert keys.required() and keys.check(secret).name == "alice" and keys.check(secret).rate_limit == 5
    assert keys.check("gf-wrong") is None and keys.check(None) is None
    with pytest.raises(ConfigError, match="already exists"):
        create_key(engine, "alice")
    first = revoke_key(engine, "alice")
    assert first["revoked"] and not first["already_revoked"] and keys.check(secret) is None
    assert revoke_key(engine, "1") == {**first, "already_revoked": True}  # keeps the first revocation time
    assert keys.required() and keys.check(None) is None  # revoking the last key does not open the server
    assert not Keys(connect(f"sqlite:///{tmp_path / 'empty.db'}")).required()
    with pytest.raises(ConfigError, match="no key named"):
        revoke_key(engine, "bob")
    assert [r["name"] for r in list_keys(engine)] == ["alice"]


def test_keys_cli(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "ci-bot", "--rate-limit", "30", "--db", db])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert Keys(connect(db)).check(secret).name == "ci-bot"
    listed = runner.invoke(app, ["keys", "list", "--db", db])
    assert listed.exit_code == 0 and "ci-bot" in listed.stdout and secret not in listed.stdout
    revoked = runner.invoke(app, ["keys", "revoke", "1", "--db", db])
    assert revoked.exit_code == 0 and revoked.stdout.startswith("revoked key 'ci-bot' (id 1) at ")
    assert Keys(connect(db)).check(secret) is None
    when = list_keys(connect(db))[0]["revoked"]
    again = runner.invoke(app, ["keys", "revoke", "ci-bot", "--db", db])  # idempotent, and says so
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"key 'ci-bot' (id 1) was already revoked at {when}; nothing changed"
    assert list_keys(connect(db))[0]["revoked"] == when
    missing = runner.invoke(app, ["keys", "revoke", "nobody", "--db", db])
    assert missing.exit_code == 2 and missing.output.startswith("error: no key named 'nobody'")
    assert runner.invoke(app, ["keys", "create", "x", "--db", "nosuchdb://"]).exit_code == 2


def test_static_key_guards_the_api_but_not_health(serve_cfg, live, oai):
    with live(serve_cfg(api_key="s3cret")) as (url, _):
        with pytest.raises(openai.AuthenticationError):
            oai(url).models.list()
        with pytest.raises(openai.AuthenticationError):
            oai(url, "wrong").completions.create(model="tiny", prompt="x", max_tokens=2)
        assert oai(url, "s3cret").completions.create(model="tiny", prompt="x", max_tokens=2).choices
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/metrics").status_code == 200


def test_managed_keys_close_an_open_server_and_revocation_is_immediate(serve_cfg, live, oai):
    cfg = serve_cfg()
    with live(cfg) as (url, state):
        assert oai(url).models.list().data  # no key anywhere: open (on loopback)
        _, secret = create_key(state.keys.engine, "alice")
        with pytest.raises(openai.AuthenticationError):
            oai(url).models.list()
        assert oai(url, secret).models.list().data
        revoke_key(state.keys.engine, "alice")
        with pytest.raises(openai.AuthenticationError):
            oai(url, secret).models.list()


def test_rate_limits_per_key(serve_cfg, live, oai):
    with live(serve_cfg(api_key="s3cret", rate_limit=2)) as (url, state):
        _, slow = create_key(state.keys.engine, "slow", rate_limit=1)
        static = oai(url, "s3cret")
        static.models.list()
        static.models.list()
        r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        oai(url, slow).models.list()  # each key has its own bucket
        with pytest.raises(openai.RateLimitError):
            oai(url, slow).models.list()


def test_rate_limiter_refills_over_time(tmp_path):
    limiter = RateLimiter(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert all(limiter.acquire("k", 60, now=100.0) == 0 for _ in range(60))  # a full minute's burst
    assert limiter.acquire("k", 60, now=100.0) == pytest.approx(1.0)  # 60/minute: one more each second
    assert limiter.acquire("k", 60, now=100.5) == pytest.approx(0.5)
    assert limiter.acquire("k", 60, now=101.0) == 0 and limiter.acquire("k", 60, now=101.0) > 0
    assert limiter.acquire("k", 0) == 0 and limiter.acquire("other", 60, now=101.0) == 0
    assert limiter.acquire("other", 60, now=50.0) == 0  # a clock behind the bucket's: no refill, no clock moved back
    assert sum(limiter.acquire("other", 60, now=101.0) == 0 for _ in range(60)) == 58


def test_replicas_on_one_database_share_a_callers_bucket(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    replicas = [RateLimiter(connect(url)) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:  # 40 concurrent requests of one caller over both replicas, limit 30
        waits = list(pool.map(lambda i: replicas[i % 2].acquire("k", 30, now=100.0), range(40)))
    assert sum(w == 0 for w in waits) == 30 and all(w > 0 for w in waits if w)


def test_refuses_a_public_host_without_a_key(tmp_path, llama_dir):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    public = ServeConfig(model=llama_dir, host="0.0.0.0", db=db)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without an API key"):
        serve(public)
    keys = Keys(connect(db))
    check_exposure(ServeConfig(model=llama_dir, host="0.0.0.0", db=db, insecure_open=True), keys)
    check_exposure(ServeConfig(model=llama_dir, host="::1", db=db), keys)
    check_exposure(public, Keys(connect(db), static_key="k"))
    create_key(keys.engine, "ops")
    check_exposure(public, keys)
    result = CliRunner().invoke(app, ["serve", "--model", str(llama_dir), "--host", "10.0.0.1",
                                      "--db", f"sqlite:///{tmp_path / 'other.db'}"])
    assert result.exit_code == 2 and result.output.startswith("error: refusing to serve on 10.0.0.1")


def test_a_rate_limit_without_keys_is_a_warning(tmp_path, llama_dir, capsys):
    keys = Keys(connect(f"sqlite:///{tmp_path / 'k.db'}"))
    warn_idle_rate_limit(ServeConfig(model=llama_dir, rate_limit=3), keys)
    err = capsys.readouterr().err
    assert err.startswith("warning: --rate-limit 3 has no effect without API keys") and err.count("\n") == 1
    warn_idle_rate_limit(ServeConfig(model=llama_dir, rate_limit=3), Keys(keys.engine, static_key="k"))
    warn_idle_rate_limit(ServeConfig(model=llama_dir), keys)
    assert capsys.readouterr().err == ""
