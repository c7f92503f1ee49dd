"""A/B testing: weights, sticky assignment (header and stored row), promotion, the report's statistics,
`genforge ab report|promote` on the command line."""

import json

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.ab import arm_weights, assign, promote, run_promote
from genforge.serve.abreport import (
    effective_counts,
    prob_to_beat,
    ratio_variance,
    report,
    run_report,
    srm,
    z_test,
)
from genforge.serve.config import AbPromoteConfig, AbReportConfig, Variant
from genforge.serve.db import StoredResponse, connect


def test_arm_weights_give_the_model_the_rest():
    main, b = Variant("a", "x"), Variant("b", "y", 0.2, weighted=True)
    assert arm_weights([main, b], {"a": "lm", "b": "lm"}) == {"a": pytest.approx(0.8), "b": 0.2}
    assert arm_weights([main, Variant("b", "y", 3.0, weighted=True)], {"a": "lm", "b": "lm"}) == {"a": 1.0, "b": 3.0}
    assert arm_weights([main, Variant("b", "y")], {"a": "lm", "b": "lm"}) is None  # no weight: not an arm
    assert arm_weights([main, b], {"a": "lm", "b": "classifier"}) is None


def test_assignment_is_sticky_and_follows_the_weights():
    weights = {"a": 0.8, "b": 0.2}
    users = [f"user-{i}" for i in range(4000)]
    first = [assign("exp", u, weights) for u in users]
    assert first == [assign("exp", u, weights) for u in users]
    assert 0.17 < first.count("b") / len(users) < 0.23
    assert [assign("other", u, weights) for u in users] != first  # experiments bucket independently


def _once(up: int, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (positive, rated) counts of `users` users rating once, `up` of them up."""
    return np.array([1.0] * up + [0.0] * (users - up)), np.ones(users)


def test_statistics_match_known_values():
    v1, v2 = ratio_variance(*_once(50, 100)), ratio_variance(*_once(65, 100))
    assert v1 == pytest.approx(0.25 / 99)  # one rating per user: the binomial variance (sample form)
    z, p = z_test(0.5, v1, 0.65, v2)
    assert z == pytest.approx(0.15 / (v1 + v2) ** 0.5) and p == pytest.approx(0.0308, abs=1e-3)
    assert z_test(0.5, 0.0, 0.5, 0.0) == (0.0, 1.0)
    assert effective_counts(0.5, v1, 100) == pytest.approx((49.5, 99), rel=0.02)
    assert prob_to_beat(10, 100, 30, 100) > 0.99 and prob_to_beat(30, 100, 10, 100) < 0.01
    assert 0.45 < prob_to_beat(10, 20, 10, 20) < 0.55


def test_a_heavy_user_is_one_user_not_a_hundred_independent_ratings():
    positives, rated = np.array([100.0] + [1.0] * 10 + [0.0] * 10), np.array([100.0] + [1.0] * 20)
    rate = positives.sum() / rated.sum()  # 110 of 120 ratings up, but the 20 light users are split 10 / 10
    var = ratio_variance(positives, rated)
    assert var > 5 * rate * (1 - rate) / rated.sum()  # far wider than 120 independent ratings would be
    assert effective_counts(rate, var, 120)[1] < 20
    control = ratio_variance(*_once(12, 20))
    assert z_test(0.6, control, rate, var)[1] > 3 * z_test(0.6, 0.6 * 0.4 / 20, rate, rate * (1 - rate) / 120)[1]
    lone = ratio_variance(np.array([100.0]), np.array([100.0]))
    assert lone > 0.004 and effective_counts(1.0, lone, 100)[1] == pytest.approx(1.0, abs=0.1)  # one user


def _chat(url, user, **extra):
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                                          "max_tokens": 3, "user": user, **extra}, timeout=60)


@pytest.fixture
def ab_cfg(serve_cfg, llama_dir):
    return serve_cfg(variant=[f"b={llama_dir}:0.5"])


def test_server_routes_users_stickily_and_stores_the_variant(ab_cfg, live, tmp_path):
    with live(ab_cfg) as (url, state):
        seen = {}
        for i in range(12):
            user = f"u{i % 6}"
            r = _chat(url, user)
            assert r.status_code == 200 and r.json()["model"] == "tiny"  # the variant stays hidden in the body
            variant = r.headers["x-genforge-variant"]
            assert seen.setdefault(user, variant) == variant
            assert variant == assign("tiny", user, {"tiny": 0.5, "b": 0.5})
        assert set(seen.values()) == {"tiny", "b"}
        streamed = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "stream": True, "user": "u1",
                                                                  "messages": [{"role": "user", "content": "x"}],
                                                                  "max_tokens": 3}, timeout=60)
        assert streamed.headers["x-genforge-variant"] == seen["u1"]
        direct = httpx.post(f"{url}/v1/completions", json={"model": "b", "prompt": "x", "max_tokens": 2}, timeout=60)
        assert direct.headers["x-genforge-variant"] == "b"
        with Session(state.keys.engine) as s:
            rows = list(s.scalars(select(StoredResponse).where(StoredResponse.model == "tiny")))
        assert len(rows) == 13 and all(r.variant == seen[r.user] for r in rows)
        assert all(r.weights_id is not None and r.latency > 0 and r.completion_tokens > 0 for r in rows)
        assert json.loads(rows[0].request)["messages"] == [{"role": "user", "content": "hi"}]

        promote(state.keys.engine, None, "b")
        assert {_chat(url, f"u{i}").headers["x-genforge-variant"] for i in range(6)} == {"b"}
        rep = httpx.get(f"{url}/v1/ab/report", timeout=60).json()
        assert [v["variant"] for v in rep["variants"]] == ["tiny", "b"] and rep["weights"] == {"tiny": 0.0, "b": 1.0}
        assert not rep["srm"]["alert"]
    with live(ab_cfg) as (url, _):  # a restart keeps the promotion
        assert _chat(url, "u0").headers["x-genforge-variant"] == "b"


def test_sample_ratio_mismatch_alerts_and_the_report_recommends(ab_cfg, tmp_path, capsys):
    engine = connect(ab_cfg.db)
    from genforge.serve.ab import Experiment
    from genforge.serve.store import Record, add_feedback, save

    Experiment("tiny", {"tiny": 0.5, "b": 0.5}, engine).start()
    rows = []
    for i in range(400):  # 90% of users on b although the weights say 50/50
        variant = "b" if i % 10 else "tiny"
        rows.append(Record(id=f"r{i}", route="chat", model="tiny", variant=variant, weights_id=1, user=f"u{i}",
                           caller="t", request={"messages": []}, texts=["x"], finish=["stop"], status=200,
                           prompt_tokens=1, completion_tokens=1, latency=0.1, ttft=0.01))
    for rec in rows:
        save(engine, rec)
    for i, rec in enumerate(rows):
        add_feedback(engine, rec.id, "t", thumbs="up" if (rec.variant == "b" or i % 20 == 0) else "down")
    rep = report(engine, "tiny")
    assert rep["srm"]["alert"] and rep["srm"]["p"] < 0.001
    assert rep["recommendation"]["action"] == "stop"
    b = next(v for v in rep["variants"] if v["variant"] == "b")
    assert b["impressions"] == 360 and b["feedback_rate"] == 1.0 and b["positive_rate"] == 1.0 and b["raters"] == 360
    assert b["prob_beat_control"] > 0.99 and b["p_value"] < 0.001
    balanced = srm([StoredResponse(id=f"x{i}", user=f"v{i}", variant="ab"[i % 2], weights_id=1) for i in range(100)],
                   {1: {"a": 1, "b": 1}})
    assert not balanced["alert"] and balanced["p"] == pytest.approx(1.0)

    out = run_report(AbReportConfig(db=ab_cfg.db, out=tmp_path / "rep"))
    printed = capsys.readouterr().out
    assert "sample ratio mismatch" in printed and "recommendation: stop" in printed
    assert (tmp_path / "rep" / "report.png").stat().st_size > 10_000 and out["experiment"] == "tiny"
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["srm"]["alert"] is True

    weights = run_promote(AbPromoteConfig(variant="b", share=0.75, db=ab_cfg.db))
    assert weights == {"tiny": pytest.approx(0.25), "b": 0.75}
    with pytest.raises(ConfigError, match="no variant 'c'"):
        promote(engine, "tiny", "c")
    with pytest.raises(ConfigError, match="no A/B experiment named 'nope'"):
        promote(engine, "nope", "b")


def test_ab_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path / 'x.db'}"
    for args in (["ab", "report", "--db", db], ["ab", "promote", "b", "--share", "2", "--db", db]):
        r = subprocess.run([sys.executable, "-m", "genforge.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_an_unknown_experiment_is_a_404_and_models_show_the_real_split(serve_cfg, llama_dir, live):
    with live(serve_cfg(variant=[f"lora={llama_dir}:0.2"])) as (url, state):
        r = httpx.get(f"{url}/v1/ab/report", params={"model": "nope"}, timeout=60)
        assert r.status_code == 404 and "no A/B experiment named 'nope'" in r.json()["error"]["message"]
        weights = {m["id"]: m["genforge"]["weight"] for m in httpx.get(f"{url}/v1/models", timeout=60).json()["data"]}
        assert weights == {"tiny": pytest.approx(0.8), "lora": pytest.approx(0.2)}
        promote(state.keys.engine, "tiny", "lora", 0.5)  # and the split after a promotion
        assert httpx.get(f"{url}/v1/models/lora", timeout=60).json()["genforge"]["weight"] == pytest.approx(0.5)


def test_ab_report_checks_its_out_before_printing(ab_cfg, tmp_path, capsys):
    connect(ab_cfg.db)
    (tmp_path / "taken").write_text("x")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        with pytest.raises(ConfigError, match="taken is a file"):
            run_report(AbReportConfig(db=ab_cfg.db, out=out))
        assert capsys.readouterr().out == ""


def test_the_report_leaves_out_responses_served_before_the_experiment(ab_cfg):
    """Serving a model alone, then adding a variant to test against it, must not count the weeks of traffic
    and ratings from before the test in the control's rates: that traffic was never randomised."""
    from genforge.serve.ab import Experiment
    from genforge.serve.store import Record, add_feedback, save

    engine = connect(ab_cfg.db)

    def served(rid, variant, weights_id):
        save(engine, Record(id=rid, route="chat", model="tiny", variant=variant, weights_id=weights_id, user=rid,
                            caller="t", request={"messages": []}, texts=["x"], finish=["stop"], status=200,
                            prompt_tokens=1, completion_tokens=1, latency=0.1, ttft=0.01))

    for i in range(5):  # before the experiment: no weights in force
        served(f"old{i}", "tiny", None)
        add_feedback(engine, f"old{i}", "t", thumbs="down")
    Experiment("tiny", {"tiny": 0.5, "b": 0.5}, engine).start()
    served("new0", "tiny", 1)
    add_feedback(engine, "new0", "t", thumbs="up")
    served("new1", "b", 1)
    control = next(v for v in report(engine, "tiny")["variants"] if v["variant"] == "tiny")
    assert control["impressions"] == 1 and control["feedback"] == 1 and control["positive_rate"] == 1.0


def test_a_restart_with_other_weights_says_it_keeps_the_databases(ab_cfg, caplog):
    """Same arms, new weights on the command line: the database's weights stay in force (a promotion must
    survive a restart), and the log says so instead of ignoring the flag silently."""
    from genforge.serve.ab import Experiment, current

    engine = connect(ab_cfg.db)
    Experiment("tiny", {"tiny": 0.8, "b": 0.2}, engine).start()
    with caplog.at_level("WARNING", logger="genforge.serve"):
        Experiment("tiny", {"tiny": 0.8, "b": 0.2}, engine).start()
        assert caplog.records == []
        Experiment("tiny", {"tiny": 0.5, "b": 0.5}, engine).start()
    assert current(engine, "tiny")[1] == {"tiny": 0.8, "b": 0.2}
    [warning] = caplog.records
    assert warning.getMessage().startswith("A/B experiment 'tiny' keeps the weights in the database (tiny 80%, b 20%), "
                                           "not the configured ones (tiny 50%, b 50%)")
