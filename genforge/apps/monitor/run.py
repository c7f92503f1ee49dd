"""`genforge app monitor run`: follow the sources, classify and store in batches, alert, serve the dashboard.

The file sources are polled on a background thread while uvicorn serves the API and the dashboard
(POST /v1/monitor/items ingests through the same `Monitor`, one batch at a time); a failed poll is retried
at the next one, but a poller that dies ends the server with an error (`run_app`), as a dead decoding worker
ends `genforge serve`. `--once` drains the file sources, evaluates the alerts and exits (replays, cron jobs,
tests).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from genforge.apps.monitor.alerts import evaluate, send_alerts
from genforge.apps.monitor.config import MonitorRunConfig
from genforge.apps.monitor.ingest import Monitor
from genforge.apps.monitor.rules import RuleSet, load_rules
from genforge.apps.monitor.sources import FolderWatch, JsonlTail, open_sources

log = logging.getLogger("genforge.monitor")


def drain(monitor: Monitor, sources: list[JsonlTail | FolderWatch], rules: RuleSet,
          progress: Any = None) -> dict[str, int]:
    """Ingest everything the sources hold now, batch by batch, then evaluate the alert rules."""
    total = {"items": 0, "classified": 0, "duplicates": 0, "repeated": 0, "alerts": 0}
    busy = True
    while busy:
        busy = False
        for source in sources:
            items, offsets = source.read(monitor.engine, monitor.chunk)
            if not offsets:
                continue
            stats = monitor.ingest(items, offsets)
            for k, v in stats.items():
                total[k] += v
            busy = busy or bool(items)
            if progress and items:
                progress(len(items))
    with monitor.lock:  # delivery (network) happens outside the lock, so it never holds up ingest
        alerts = evaluate(monitor.engine, rules, send=False)
    send_alerts(monitor.engine, rules, alerts)
    total["alerts"] += len(alerts)
    return total


def poll_forever(monitor: Monitor, sources: list, rules: RuleSet, every: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            stats = drain(monitor, sources, rules)
            if stats["items"] or stats["alerts"]:
                log.info("ingested", extra=stats)
        except Exception:  # a bad moment on one source must not end the monitor; the next poll retries
            log.exception("poll failed")
        stop.wait(every)


def run(cfg: MonitorRunConfig) -> dict[str, int] | None:
    """Run the monitor; with `once`, drain the file sources and return the counts."""
    import sys

    import torch
    from tqdm import tqdm

    from genforge.apps.monitor.model import load_monitor_model
    from genforge.serve.config import default_db_url
    from genforge.serve.db import connect

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rules = load_rules(cfg.rules)
    sources = open_sources(cfg.source, settle=0.0 if cfg.once else min(1.0, cfg.poll), once=cfg.once)
    model = load_monitor_model(cfg.model)
    if cfg.once or not cfg.serve:
        monitor = Monitor(connect(cfg.db or default_db_url()), model, cfg.batch_size, cfg.chunk)
        if cfg.once:
            with tqdm(unit="item", desc="ingest", file=sys.stderr) as bar:
                stats = drain(monitor, sources, rules, bar.update)
            print_summary(stats)
            return stats
        poll_forever(monitor, sources, rules, cfg.poll, threading.Event())
        return None
    from genforge.apps.monitor.web import build_app
    from genforge.serve.logs import setup_logging
    from genforge.serve.server import Worker, check_exposure, run_app

    setup_logging("info")
    app, monitor = build_app(cfg, model, rules)
    check_exposure(app.state.genforge.cfg, app.state.genforge.keys)
    stop = threading.Event()
    poller = Worker("the file poller of the monitor", poll_forever, monitor, sources, rules, cfg.poll, stop)
    poller.start()
    log.info("monitor", extra={"dashboard": f"http://{cfg.host}:{cfg.port}/monitor"})
    try:
        run_app(app, cfg.host, cfg.port, [poller])
    finally:
        stop.set()
        poller.join(30)
    return None


def print_summary(stats: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="monitor ingest")
    for k in stats:
        table.add_column(k)
    table.add_row(*(str(v) for v in stats.values()))
    Console(stderr=True).print(table)
