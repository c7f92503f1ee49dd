"""The monitor on the serving stack: POST /v1/monitor/items, trend and alert routes, and the dashboard.

`monitor_router(monitor, rules)` is an APIRouter mounted on `genforge.serve.app.create_app`'s app by
composition (`build_app`); its /v1 routes use the serving stack's `authorize` (keys, rate limits), and
the page /monitor is static HTML that calls them with the key the user types (as the A/B dashboard).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from pydantic import Field
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from genforge.apps.monitor.alerts import acknowledge, evaluate, list_alerts, send_alerts
from genforge.apps.monitor.analytics import clamp_period, data_span, trend_rows, windows
from genforge.apps.monitor.config import WINDOWS, MonitorRunConfig
from genforge.apps.monitor.ingest import Monitor, parse_item
from genforge.apps.monitor.rules import RuleSet
from genforge.apps.monitor.tables import MonitorItem, MonitorText
from genforge.errors import DataError
from genforge.serve.app import Authorized
from genforge.serve.errors import ApiError
from genforge.serve.schemas import JsonBody

PAGE = Path(__file__).parent / "ui" / "monitor.html"
MAX_ITEMS = 1000
MAX_ID = 2**63 - 1


class ItemsRequest(JsonBody):
    items: list[dict[str, Any]] = Field(..., min_length=1, max_length=MAX_ITEMS)


def summary(monitor: Monitor) -> dict[str, Any]:
    with Session(monitor.engine) as s:
        items, dups, first, last = s.execute(select(func.count(), func.sum(case((MonitorItem.duplicate, 1),
                                                                                else_=0)),
                                                    func.min(MonitorItem.t), func.max(MonitorItem.t))).one()
        topics = [t for (t,) in s.execute(select(MonitorItem.topic).group_by(MonitorItem.topic))]
        texts = s.scalar(select(func.count()).select_from(MonitorText))
    return {"items": items, "duplicates": int(dups or 0), "texts": texts, "first": first, "last": last,
            "topics": sorted(topics)}


def monitor_router(monitor: Monitor, rules: RuleSet) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/monitor/items")
    async def post_items(body: ItemsRequest, caller: Authorized) -> dict[str, Any]:
        now = int(time.time())
        try:
            items = [parse_item(r, f"http:{caller.name}", now, f"items[{i}]") for i, r in enumerate(body.items)]
        except DataError as e:
            raise ApiError(400, str(e), param="items") from None

        def work() -> dict[str, Any]:
            stats = monitor.ingest(items)
            with monitor.lock:
                alerts = evaluate(monitor.engine, rules, send=False)
            send_alerts(monitor.engine, rules, alerts)
            return {**stats, "alerts": len(alerts)}

        return {"object": "monitor.ingest", **await run_in_threadpool(work)}

    @router.get("/v1/monitor/series")
    async def get_series(_: Authorized, by: str = "topic", window: str = "hour", since: int | None = None,
                         until: int | None = None, halflife: float = 24.0) -> dict[str, Any]:
        if by not in ("topic", "entity", "all") or window not in WINDOWS:
            raise ApiError(400, f"by must be topic|entity|all and window one of {', '.join(WINDOWS)}")
        if not halflife > 0:
            raise ApiError(400, f"halflife must be > 0 windows; got {halflife}", param="halflife")

        def read() -> dict[str, list]:
            start, end = clamp_period(since, until, data_span(monitor.engine))
            return windows(monitor.engine, by=by, width=WINDOWS[window], since=start, until=end)

        series = await run_in_threadpool(read)
        return {"object": "monitor.series", "by": by, "window": window, "keys": list(series),
                "rows": trend_rows(series, halflife)}

    @router.get("/v1/monitor/alerts")
    async def get_alerts(_: Authorized, limit: int = 200) -> dict[str, Any]:
        return {"object": "list", "data": await run_in_threadpool(list_alerts, monitor.engine,
                                                                  limit=max(1, min(limit, 1000)))}

    @router.post("/v1/monitor/alerts/{alert_id}/ack")
    async def ack_alert(alert_id: int, caller: Authorized) -> dict[str, Any]:
        # an id beyond the database's 64-bit integers names no alert (SQLite's driver would raise OverflowError)
        in_range = 0 < alert_id <= MAX_ID
        alert = await run_in_threadpool(acknowledge, monitor.engine, alert_id, caller.name) if in_range else None
        if alert is None:
            raise ApiError(404, f"no alert with id {alert_id}", code="alert_not_found")
        return alert

    @router.get("/v1/monitor/summary")
    async def get_summary(_: Authorized) -> dict[str, Any]:
        return await run_in_threadpool(summary, monitor)

    @router.get("/monitor", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    return router


def build_app(cfg: MonitorRunConfig, model: Any, rules: RuleSet) -> tuple[FastAPI, Monitor]:
    """The serving stack's app (keys, gateway, metrics, /v1/classify on the sentiment model) + the monitor."""
    from genforge.artifacts import read_manifest
    from genforge.serve.app import create_app
    from genforge.serve.config import ServeConfig
    from genforge.serve.server import build_state

    sentiment = Path(cfg.model) / read_manifest(cfg.model)["sentiment"]
    serve_cfg = ServeConfig(model=sentiment, name="sentiment", db=cfg.db, host=cfg.host,
                            port=cfg.port, api_key=cfg.api_key, threads=cfg.threads, store=False)
    state = build_state(serve_cfg)
    monitor = Monitor(state.keys.engine, model, cfg.batch_size, cfg.chunk)
    app = create_app(state)
    app.include_router(monitor_router(monitor, rules))
    return app, monitor
