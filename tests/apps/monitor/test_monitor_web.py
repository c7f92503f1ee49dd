"""The monitor on the serving stack: POST /v1/monitor/items (auth, batches, errors), trends, alerts and
acknowledgement over HTTP, the dashboard in headless Chromium, the static report, and `run --once`."""

import json
import random
import subprocess
import sys
import threading

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from genforge.apps.monitor.config import MonitorReportConfig, MonitorRunConfig
from genforge.apps.monitor.report import report
from genforge.apps.monitor.rules import Rule, RuleSet
from genforge.apps.monitor.tables import MonitorItem
from genforge.apps.monitor.web import build_app
from genforge.cli import app
from genforge.errors import ConfigError, DataError
from genforge.serve.db import connect

H = 3600
KEY = "test-key"


def surge_rows(hours=40, at=30, topic="rates"):
    rng = random.Random(0)
    return [(h * H + i * 60, topic, "negative" if rng.random() < (0.6 if h == at else 0.1) else "neutral", None)
            for h in range(hours) for i in range(60)]


@pytest.fixture
def monitor_app(tmp_path, monitor_model, loaded_model):
    cfg = MonitorRunConfig(model=monitor_model, source=["http"], db=f"sqlite:///{tmp_path / 'm.db'}", api_key=KEY)
    app, monitor = build_app(cfg, loaded_model, RuleSet([Rule("surge", "ewma_z")]))
    return app, monitor


def test_http_items_series_alerts_and_ack(monitor_app, live, add_items):
    app, monitor = monitor_app
    add_items(monitor.engine, surge_rows())
    auth = {"Authorization": f"Bearer {KEY}"}
    with live(app) as (url, _):
        items = [{"text": "Bank cuts jobs", "ts": 40 * H + 5, "source": "wire", "id": "1", "ticker": "acme"},
                 {"text": "bank cuts jobs", "ts": 40 * H + 6}]
        assert httpx.post(f"{url}/v1/monitor/items", json={"items": items}).status_code == 401
        r = httpx.post(f"{url}/v1/monitor/items", json={"items": items}, headers=auth)
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in ("items", "classified", "duplicates", "alerts")} == \
            {"items": 2, "classified": 1, "duplicates": 1, "alerts": 1}
        assert httpx.post(f"{url}/v1/monitor/items", json={"items": items[:1]}, headers=auth).json()["repeated"] == 1
        bad = httpx.post(f"{url}/v1/monitor/items", json={"items": [{"text": "x", "ts": "soon"}]}, headers=auth)
        assert bad.status_code == 400 and "items[0]: bad timestamp" in bad.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/monitor/items", json={"items": []}, headers=auth).status_code == 400
        series = httpx.get(f"{url}/v1/monitor/series?by=topic&window=hour", headers=auth).json()
        assert "rates" in series["keys"] and len([r for r in series["rows"] if r["key"] == "rates"]) == 41
        far = httpx.get(f"{url}/v1/monitor/series", params={"since": -10**15, "until": 10**30}, headers=auth)
        assert far.status_code == 200 and far.json()["rows"] == series["rows"]  # cut to the data, not 10^11 windows
        assert httpx.get(f"{url}/v1/monitor/series?halflife=0", headers=auth).status_code == 400
        ent = httpx.get(f"{url}/v1/monitor/series?by=entity&window=day", headers=auth).json()
        assert ent["keys"] == ["ACME"]
        alerts = httpx.get(f"{url}/v1/monitor/alerts", headers=auth).json()["data"]
        assert [(a["key"], a["window"]) for a in alerts] == [("rates", 30 * H)] and alerts[0]["examples"]
        ack = httpx.post(f"{url}/v1/monitor/alerts/{alerts[0]['id']}/ack", headers=auth).json()
        assert ack["acknowledged_by"] == "static"
        assert httpx.post(f"{url}/v1/monitor/alerts/999/ack", headers=auth).status_code == 404
        assert httpx.post(f"{url}/v1/monitor/alerts/{10**20}/ack", headers=auth).status_code == 404  # not a 500
        summary = httpx.get(f"{url}/v1/monitor/summary", headers=auth).json()
        assert summary["items"] == 40 * 60 + 2 and summary["duplicates"] == 1
        assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.browser
def test_dashboard_in_a_browser(monitor_app, live, add_items, browser):
    app, monitor = monitor_app
    add_items(monitor.engine, surge_rows())
    add_items(monitor.engine, surge_rows(at=-1, topic="chips"), text="chip")
    with live(app) as (url, _):
        httpx.post(f"{url}/v1/monitor/items", json={"items": [{"text": "late news", "ts": 40 * H}]},
                   headers={"Authorization": f"Bearer {KEY}"})
        # the dashboard re-renders on a timer: every lookup is inside a wait that retries a stale element
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
        browser.get(f"{url}/monitor")
        wait.until(lambda d: d.find_element(By.ID, "keybox").is_displayed())
        browser.find_element(By.ID, "key").send_keys(KEY + "\n")
        wait.until(lambda d: {c.get_attribute("data-key") for c in d.find_elements(By.CSS_SELECTOR, "canvas.series")}
                   >= {"rates", "chips"})
        wait.until(lambda d: "negative share of topic 'rates'" in (row := d.find_element(By.CSS_SELECTOR,
                                                                                          "tr.alert-row")).text
                   and len(row.find_elements(By.CSS_SELECTOR, "li.example")) == 5)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "tr.alert-row button.ack").click() or True)
        wait.until(lambda d: "acknowledged by static" in d.find_element(By.CSS_SELECTOR, "tr.alert-row").text)
        assert "items" in browser.find_element(By.ID, "summary").text


def test_static_report(tmp_path, engine, add_items):
    from genforge.apps.monitor.alerts import evaluate

    add_items(engine, surge_rows())
    evaluate(engine, RuleSet([Rule("surge", "ewma_z")]))
    db = str(engine.url)
    out = report(MonitorReportConfig(out=tmp_path / "report.html", db=db, since="30h"))
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 1 and "negative share of topic &#x27;rates&#x27;" in html
    assert "<li>[negative" in html
    out = report(MonitorReportConfig(out=tmp_path / "r2.html", db=db, since="1970-01-02T08:00"))
    assert "No alerts in this period" in out.read_text() and "data:image/png" in out.read_text()


def test_report_since_inside_a_window_starts_at_the_window(tmp_path, engine, add_items):
    """Charts, alert list and header all start at the window that holds --since: an alert of that window is
    listed next to the chart that shows it, and the header's period is the one its item count covers."""
    from genforge.apps.monitor.tables import MonitorAlert

    add_items(engine, [(h * H + i * 60, "rates", "negative" if h == 10 else "neutral", None)
                       for h in range(12) for i in range(20)])
    with Session(engine) as s, s.begin():
        s.add(MonitorAlert(rule="surge", kind="binomial_cusum", by="topic", key="rates", window=10 * H, width=H,
                           value=1.0, baseline=0.1, score=9.0, count=20, message="SURGE-IN-HOUR-10", examples="[]"))
    out = report(MonitorReportConfig(out=tmp_path / "r.html", db=str(engine.url), since="1970-01-01T10:30"))
    html = out.read_text()
    assert "SURGE-IN-HOUR-10" in html and "1 alerts" in html
    assert "1970-01-01 10:00 to 1970-01-01 11:19 UTC; 40 items" in html


def test_report_of_a_replay_with_empty_hours(tmp_path, monitor_model, sentiment_csv):
    """replay -> run --once -> report, the documented flow, on a stream thin enough that hours are empty."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    runner = CliRunner()
    for args in (["replay", "--data", str(sentiment_csv), "--days", "3", "--per-hour", "1", "--entities", "AAPL",
                  "--out", str(tmp_path / "replay")],
                 ["run", "--model", str(monitor_model), "--source", f"jsonl:{tmp_path / 'replay' / 'stream.jsonl'}",
                  "--once", "--no-serve", "--db", db],
                 ["report", "--db", db, "--by", "entity", "--out", str(tmp_path / "report.html")]):
        result = runner.invoke(app, ["app", "monitor", *args])
        assert result.exit_code == 0, result.output
    with Session(connect(db)) as s:
        hours = {t // H for t in s.scalars(select(MonitorItem.t))}
    assert len(hours) < 3 * 24  # some hours of the replay hold no item: they are gaps in the chart
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 1


def test_report_period_is_cut_to_the_data(tmp_path, engine, add_items):
    add_items(engine, [(0, "rates", "negative", None), (5 * H, "rates", "neutral", None),
                       (9 * H + 1, "rates", "positive", None)])
    db = str(engine.url)
    out = report(MonitorReportConfig(out=tmp_path / "r.html", db=db, since="99999999999d", until="9999-12-31"))
    assert "1970-01-01 00:00 to 1970-01-01 09:00 UTC; 3 items" in out.read_text()
    with pytest.raises(DataError, match="no items in the period asked for: the database holds items from "
                                        "1970-01-01 00:00 to 1970-01-01 09:00 UTC"):
        report(MonitorReportConfig(out=tmp_path / "r.html", db=db, since="2100-01-01"))
    with pytest.raises(ConfigError, match="bad time '1e400'"):
        report(MonitorReportConfig(out=tmp_path / "r.html", db=db, since="1e400"))
    with pytest.raises(ConfigError, match="is a folder: give a file such as"):
        MonitorReportConfig(out=tmp_path, db=db).check()
    with pytest.raises(ConfigError, match="typo.db does not exist"):
        report(MonitorReportConfig(out=tmp_path / "r.html", db=f"sqlite:///{tmp_path / 'typo.db'}"))
    assert not (tmp_path / "typo.db").exists()


def test_a_dead_poller_ends_the_monitor_server_with_an_error(tmp_path, monitor_model, blocking, monkeypatch):
    from genforge.apps.monitor.run import run

    serving = threading.Event()

    def broken(*args):  # a bug past poll_forever's retry of failed polls
        serving.wait(60)
        raise RuntimeError("boom")

    monkeypatch.setattr("genforge.apps.monitor.run.poll_forever", broken)
    news = tmp_path / "news.jsonl"
    news.write_text("")
    _, thread, raised = blocking(run, lambda port: MonitorRunConfig(
        model=monitor_model, source=[f"jsonl:{news}"], db=f"sqlite:///{tmp_path / 'm.db'}", port=port))
    serving.set()
    thread.join(30)
    assert not thread.is_alive() and "the file poller of the monitor failed (RuntimeError('boom'))" in str(raised[0])


def test_run_once_from_the_cli_then_resume_through_the_api(tmp_path, monitor_model):
    from sqlalchemy import func

    from genforge.apps.monitor.run import run
    from genforge.apps.monitor.tables import MonitorText

    news, db = tmp_path / "news.jsonl", f"sqlite:///{tmp_path / 'm.db'}"
    news.write_text("".join(json.dumps({"text": f"story {i % 3}", "ts": i}) + "\n" for i in range(7)))
    r = subprocess.run([sys.executable, "-m", "genforge.cli", "app", "monitor", "run", "--model", str(monitor_model),
                        "--source", f"jsonl:{news}", "--once", "--db", db], capture_output=True, text=True)
    assert r.returncode == 0 and "monitor ingest" in r.stderr, r.stderr
    cfg = MonitorRunConfig(model=monitor_model, source=[f"jsonl:{news}"], once=True, db=db)
    assert run(cfg)["items"] == 0  # a restart finds nothing new
    with Session(connect(db)) as s:
        assert s.scalar(select(func.count()).select_from(MonitorItem)) == 7
        assert s.scalar(select(func.count()).select_from(MonitorText)) == 3
    with pytest.raises(ConfigError, match="bad time 'last week'"):
        report(MonitorReportConfig(out=tmp_path / "r.html", db=db, since="last week"))


def test_concurrent_item_batches_store_each_item_once(monitor_app, live):
    """16 clients post overlapping batches at once (the same texts from several sources, retried ids): every
    item is stored once, every repeat of an id is counted as repeated, every repeated text as a duplicate."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func

    from genforge.apps.monitor.tables import MonitorText

    app, monitor = monitor_app
    auth = {"Authorization": f"Bearer {KEY}"}

    def batch(client: int) -> list[dict]:  # ids 0-39 of one source, each sent by two clients; 8 distinct texts
        return [{"text": f"Story {n % 8}", "ts": n, "source": "wire", "id": str(n)}
                for n in range(client * 5 % 40, client * 5 % 40 + 5)] + [{"text": f"story {client % 8}", "ts": client}]

    with live(app) as (url, _), ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda c: httpx.post(f"{url}/v1/monitor/items", json={"items": batch(c)},
                                                     headers=auth, timeout=60), range(16)))
    assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers if r.status_code != 200]
    stats = {k: sum(r.json()[k] for r in answers) for k in ("items", "classified", "duplicates", "repeated")}
    assert stats == {"items": 40 + 16, "classified": 8, "duplicates": 40 + 16 - 8, "repeated": 40}
    with Session(monitor.engine) as s:
        assert s.scalar(select(func.count()).select_from(MonitorItem)) == 56
        assert s.scalar(select(func.count()).where(MonitorItem.duplicate)) == 48
        assert s.scalar(select(func.count(func.distinct(MonitorItem.ext_id))).where(MonitorItem.source == "wire")) == 40
        assert s.scalar(select(func.sum(MonitorText.seen))) == 56
