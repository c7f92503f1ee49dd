"""`genforge app monitor report`: the dashboard as one static HTML file with PNG charts (matplotlib).

Per topic (or entity): the negative share per window with its 95% interval and the EWMA baseline,
the item counts below it, and red marks where alerts fired; then the alert list with the example
items behind each alert. The PNGs are embedded (data URIs), so the report is one file to mail or archive.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genforge.apps.monitor.alerts import list_alerts
from genforge.apps.monitor.analytics import clamp_period, data_span, trend_rows, windows
from genforge.apps.monitor.config import WINDOWS, MonitorReportConfig
from genforge.apps.monitor.ingest import parse_time
from genforge.artifacts import atomic_write_text
from genforge.errors import ConfigError, DataError

SPAN = re.compile(r"^(\d+)([mhdw])$")
SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(value: str | None, last: int) -> int | None:
    """ISO date/time or epoch seconds; a span like 7d / 24h / 90m counts back from `last`."""
    if value is None:
        return None
    m = SPAN.match(value.strip())
    if m:
        return last - int(m.group(1)) * SECONDS[m.group(2)]
    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"bad time {value!r}: use an ISO date/time (2026-01-31T09:00) or a span (7d, 24h, 90m)") from None


def chart(key: str, rows: list[dict[str, Any]], alerts: list[dict[str, Any]], width: int) -> str:
    """A two-panel PNG (negative share with CI and baseline; counts) as a base64 data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def share(key: str) -> list[float]:  # NaN (a gap in the line and band) where a window has no items
        return [r[key] if r["n"] else math.nan for r in rows]

    when = [datetime.fromtimestamp(r["start"], UTC) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, height_ratios=[2, 1])
    top.fill_between(when, share("neg_lo"), share("neg_hi"), color="#e15759", alpha=0.15, step="post")
    top.step(when, share("neg_share"), where="post", color="#e15759", label="negative share")
    top.plot(when, [r["baseline"] for r in rows], color="#555", linestyle="--", linewidth=1, label="EWMA baseline")
    for a in alerts:
        top.axvline(datetime.fromtimestamp(a["window"], UTC), color="red", linewidth=1.5, alpha=0.7)
    top.set_ylim(0, 1)
    top.set_title(key, loc="left", fontsize=10)
    top.legend(loc="upper right", fontsize=7)
    bottom.bar(when, [r["n"] for r in rows], width=width / 86400 * 0.9, align="edge", color="#4e79a7")
    bottom.set_ylabel("items", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def report(cfg: MonitorReportConfig) -> Path:
    """Write the HTML report; return its path."""
    from genforge.serve.config import default_db_url
    from genforge.serve.db import connect

    engine = connect(cfg.db or default_db_url(), create=False)  # a mistyped --db is no new empty database
    span = data_span(engine)
    if span is None:
        raise DataError(f"the monitor database {cfg.db or default_db_url()} holds no items yet")
    first, last = span
    since, until = parse_moment(cfg.since, last), parse_moment(cfg.until, last)
    since, end = clamp_period(since, None if until is None else until + 1, span)  # end: exclusive
    start, stop = first if since is None else since, last + 1 if end is None else end
    if start >= stop:
        raise DataError(f"no items in the period asked for: the database holds items from {_when(first)} to "
                        f"{_when(last)} UTC")
    width = WINDOWS[cfg.window]
    if since is not None:  # the report shows whole windows: its charts, alert list and header all start at one
        since = start = since - since % width
    series = windows(engine, by=cfg.by, width=width, since=since, until=end)
    rows = trend_rows(series)
    alerts = list_alerts(engine, since=since, until=end, limit=1000)
    period = f"{_when(start)} to {_when(stop - 1)} UTC"
    parts = [f"<h1>Sentiment monitor report</h1><p>{html.escape(period)}; {sum(r['n'] for r in rows)} items, "
             f"{len(alerts)} alerts; window: {cfg.window}, per {cfg.by}.</p>", "<h2>Trends</h2>"]
    for key in series:
        key_rows = [r for r in rows if r["key"] == key]
        key_alerts = [a for a in alerts if a["key"] == key]
        parts.append(f'<div class="chart"><img alt="{html.escape(key)}" src="{chart(key, key_rows, key_alerts, width)}">'
                     "</div>")
    parts.append("<h2>Alerts</h2>")
    if not alerts:
        parts.append("<p>No alerts in this period.</p>")
    for a in alerts:
        items = "".join(f"<li>[{html.escape(e['sentiment'])} {e['confidence']:.2f}, {html.escape(e['source'])}] "
                        f"{html.escape(e['text'])}</li>" for e in a["examples"])
        ack = f"acknowledged by {html.escape(a['acknowledged_by'])}" if a["acknowledged"] else "not acknowledged"
        parts.append(f'<div class="alert"><b>{html.escape(a["message"])}</b> <i>({ack})</i><ul>{items}</ul></div>')
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sentiment monitor report</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:0 auto;padding:1rem}"
            ".alert{border-left:4px solid #c00;padding:.3rem .8rem;margin:.6rem 0}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    atomic_write_text(cfg.out, page)
    print(f"wrote {cfg.out}: {len(series)} series, {len(alerts)} alerts")
    return cfg.out
