"""The live monitor alerts as a replay of the same items does: detector state kept per rule and key in the
database (hour by hour, across a restart, reset when a rule changes); the volume warm-up counted from a key's
first item; watched entities read as ingest stores them; windows before 1970."""

import random

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from genforge.apps.monitor.alerts import evaluate
from genforge.apps.monitor.analytics import Window, windows
from genforge.apps.monitor.ingest import parse_item, parse_time
from genforge.apps.monitor.rules import Rule, RuleSet, detect, load_rules
from genforge.serve.db import connect

H = 3600
DAYS = 20  # well past warmup + 6 half-lives (312 h), the history an evaluation once recomputed its detectors from


def hourly(days, seed):
    """Two topics of 30-50 items an hour at a 0.15 negative share; six 6-hour surges to 0.30 on topic A."""
    rng = random.Random(seed)
    surges = {h for s in rng.sample(range(60, days * 24 - 10), 6) for h in range(s, s + 6)}
    rows = []
    for h in range(days * 24 + 1):
        for topic in ("A", "B"):
            p = 0.30 if h in surges and topic == "A" else 0.15
            rows += [(h * H + j * 10, topic, "negative" if rng.random() < p else "neutral", None)
                     for j in range(rng.randint(30, 50))]
    return rows


def rules(threshold=4.5):
    return RuleSet([Rule("negative-surge", "binomial_cusum", threshold=threshold, shift=1.5),
                    Rule("sudden", "ewma_z", threshold=3.0), Rule("cusum", "cusum", threshold=4.0, k=0.75),
                    Rule("volume-spike", "volume", threshold=6.0, min_ratio=2.0)])


def fired(alerts):
    return [(a["rule"], a["key"], a["window"] // H) for a in alerts]


def test_hourly_evaluation_with_a_restart_alerts_exactly_as_one_replay(tmp_path, add_items):
    from genforge.apps.monitor.tables import MonitorRuleState

    rows = hourly(DAYS, seed=0)
    replay, live = connect(f"sqlite:///{tmp_path / 'replay.db'}"), connect(f"sqlite:///{tmp_path / 'live.db'}")
    add_items(replay, rows)
    add_items(live, rows)
    once = fired(evaluate(replay, rules(), send=False))
    got = []
    for h in range(1, DAYS * 24 + 1):
        if h == DAYS * 24 // 2:  # a restart: a new engine and rule set, only the database carries over
            live = connect(f"sqlite:///{tmp_path / 'live.db'}")
        got += fired(evaluate(live, rules(), now=h * H, send=False))
    assert {r for r, _, _ in once} >= {"negative-surge", "sudden", "cusum"}
    assert sorted(got) == sorted(once) and len(set(got)) == len(got)  # nothing changed, repeated or skipped
    with Session(live) as s:
        states = s.scalars(select(MonitorRuleState)).all()
    assert {(r.rule, r.key) for r in states} == {(r.name, k) for r in rules().rules for k in "AB"}
    assert {r.position for r in states} == {DAYS * 24 * H}


def test_lateness_waits_for_a_slower_source(tmp_path, add_items):
    """A second source whose items arrive 30 minutes after their time: evaluated as they come in, a window
    is folded before its late items are there (the detectors' state differs from a replay's); with
    `lateness: 1800` every window waits for them, and the live run ends in the replay's state and alerts."""
    from genforge.apps.monitor.tables import MonitorRuleState

    rows = [(t - t % H + t % H * 7, *rest) for t, *rest in hourly(4, seed=2)]  # spread over each hour
    slow = [r for i, r in enumerate(rows) if i % 2]  # half the items come from the slow source
    fast = [r for i, r in enumerate(rows) if not i % 2]

    def states(engine):
        with Session(engine) as s:
            return {(r.rule, r.key, r.position): r.state for r in s.scalars(select(MonitorRuleState))}

    def live_run(lateness, name):
        ruleset = rules()
        for rule in ruleset.rules:
            rule.lateness = lateness
        engine, alerts = connect(f"sqlite:///{tmp_path / name}"), []
        for m in range(0, 4 * 24 * 60 + 1, 10):  # every 10 minutes: what arrived by then, then an evaluation
            now = m * 60
            arrived = [r for r in fast if now - 600 < r[0] <= now] + [r for r in slow if now - 600 < r[0] + 1800 <= now]
            if arrived:
                add_items(engine, arrived)
                alerts += fired(evaluate(engine, ruleset, send=False))
        add_items(engine, [r for r in slow if r[0] + 1800 > 4 * 24 * H])
        replay = connect(f"sqlite:///{tmp_path / (name + '.replay')}")
        add_items(replay, rows)
        ruleset_replay = rules()
        once = fired(evaluate(replay, ruleset_replay, now=max(s[2] for s in states(engine)), send=False))
        return alerts, once, states(engine), states(replay)

    alerts, once, live, replay = live_run(1800, "late.db")
    assert once and sorted(alerts) == sorted(once) and live == replay
    _, _, eager, replay0 = live_run(0, "eager.db")
    assert eager != replay0  # without the wait, late items are left out of their windows


def test_a_changed_rule_starts_its_state_over(tmp_path, add_items):
    """A rule evaluated under other settings neither keeps their CUSUM sums nor alerts again on past windows:
    from its mark on it alerts as a replay with the new settings would."""
    rows = hourly(4, seed=1)
    old, new = connect(f"sqlite:///{tmp_path / 'old.db'}"), connect(f"sqlite:///{tmp_path / 'new.db'}")
    add_items(old, rows)
    add_items(new, rows)
    half = 48 * H
    evaluate(old, rules(threshold=50.0), now=half, send=False)
    later = fired(evaluate(old, rules(threshold=3.0), now=4 * 24 * H, send=False))
    replay = fired(evaluate(new, rules(threshold=3.0), now=4 * 24 * H, send=False))
    surge = [a for a in replay if a[0] == "negative-surge"]
    assert surge and [a for a in later if a[0] == "negative-surge"] == [a for a in surge if a[2] >= 48]


def test_volume_waits_for_the_keys_own_data():
    """Empty windows before a key's first item are no counts of 0: neither a baseline nor the warm-up."""
    rule = Rule("v", "volume", threshold=6.0, min_ratio=2.0)
    late = [Window("B", h * H) for h in range(30)] + [Window("B", h * H, n=20) for h in range(30, 60)]
    assert detect(rule, late) == []
    spike = [*late, *[Window("B", h * H, n=20) for h in range(60, 80)], Window("B", 80 * H, n=120)]
    assert [h.index for h in detect(rule, spike)] == [80]  # a real spike after 24 windows with data still alerts


@pytest.mark.parametrize("backlog", [1, 30])
def test_a_fresh_live_monitor_raises_no_volume_alert_on_steady_topics(engine, add_items, backlog):
    add_items(engine, [(h * H + j * 60, "A", "neutral", None) for h in range(backlog + 30) for j in range(40)]
              + [(h * H + j * 60, "B", "neutral", None) for h in range(backlog + 5, backlog + 30) for j in range(20)])
    got = evaluate(engine, rules(), now=backlog * H, send=False)  # the start-up drain of the backlog
    for h in range(backlog + 1, backlog + 30):
        got += evaluate(engine, rules(), now=h * H, send=False)  # then live, hour by hour
    assert [a["message"] for a in got if a["rule"] == "volume-spike"] == []


def test_watched_entities_are_read_as_ingest_stores_them(engine, add_items, tmp_path):
    assert parse_item({"text": "x", "ticker": " aapl"}, "s", 0, "w").entity == "AAPL"
    assert Rule("w", "entity_negative", by="entity", keys=[" aapl", "Tsla"]).keys == ["AAPL", "TSLA"]
    assert Rule("t", "ewma_z", keys=["rates"]).keys == ["rates"]  # topics are names, not tickers
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: w, kind: entity_negative, by: entity, keys: [aapl], threshold: 0.5}\n")
    ruleset = load_rules(path)
    assert ruleset.rules[0].keys == ["AAPL"]
    add_items(engine, [(h * H + j, "A", "negative" if h == 5 else "neutral", "AAPL") for h in range(8) for j in range(20)])
    assert [(a["key"], a["window"]) for a in evaluate(engine, ruleset, send=False)] == [("AAPL", 5 * H)]


def test_windows_before_1970(engine, add_items):
    before, after = parse_time("1969-12-31T23:30:00Z"), parse_time("1970-01-01T00:30:00Z")
    add_items(engine, [(before, "A", "negative", None), (after, "A", "positive", None),
                       (parse_time("1969-12-30T12:00:00Z"), "B", "neutral", None)])
    series = windows(engine, by="topic", width=H)
    assert [(w.start, w.n, w.negative) for w in series["A"] if w.n] == [(-H, 1, 1), (0, 1, 0)]
    assert [(w.start, w.n) for w in windows(engine, by="all", width=86400)["all"]] == [(-2 * 86400, 1),
                                                                                       (-86400, 1), (0, 1)]


def test_windows_before_1970_on_postgresql(postgres_url, add_items):
    """PostgreSQL divides integers toward zero as SQLite does: the same buckets on both."""
    with create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:  # its own database: the
        conn.execute(text("CREATE DATABASE monitor_pre1970"))  # other tests' series must not reach back to 1969
    engine = connect(postgres_url.rsplit("/", 1)[0] + "/monitor_pre1970")
    add_items(engine, [(-1800, "pre1970", "negative", None), (1800, "pre1970", "positive", None),
                       (-86400 * 365 - 1, "pre1970", "neutral", None)])
    starts = [w.start for w in windows(engine, by="topic", width=86400, keys=["pre1970"])["pre1970"] if w.n]
    assert starts == [-366 * 86400, -86400, 0]
    hours = [w.start for w in windows(engine, by="topic", width=H, since=-H, keys=["pre1970"])["pre1970"] if w.n]
    assert hours == [-H, 0]


def test_a_database_from_before_the_states_is_upgraded_and_its_states_rebuilt(tmp_path, add_items):
    """monitor_0002 adds the states to a monitor_0001 database; its rules, marked but stateless, rebuild their
    state from the first item and alert from their marks on, as one replay would."""
    rows = hourly(4, seed=1)
    old, new = connect(f"sqlite:///{tmp_path / 'old.db'}"), connect(f"sqlite:///{tmp_path / 'new.db'}")
    add_items(old, rows)
    add_items(new, rows)
    evaluate(old, rules(), now=48 * H, send=False)
    with old.begin() as conn:  # back to the schema before the states
        conn.exec_driver_sql("DROP TABLE monitor_rule_states")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'monitor_0001' WHERE version_num = 'monitor_0002'")
    old = connect(f"sqlite:///{tmp_path / 'old.db'}")
    later = fired(evaluate(old, rules(), now=4 * 24 * H, send=False))
    replay = fired(evaluate(new, rules(), now=4 * 24 * H, send=False))
    assert later and later == [a for a in replay if a[2] >= 48]
