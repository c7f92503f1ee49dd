"""Alert evaluation: run each rule over the windows that completed since its last run, store new alerts
(deduplicated and cooled down), then deliver them.

Time is the items' own time: a window is complete once an item later than its end (plus the rule's
`lateness`, the wait for slower sources) has arrived, so a replay of last month alerts exactly as the live
stream would have. Each rule's "evaluated up to" mark
lives in monitor_offsets and is committed with the alerts it produced and with each key's detector state
(monitor_rule_states: baseline, windows seen, CUSUM sum), so an evaluation folds in only the windows
completed since, and neither a restart nor evaluating every hour instead of once changes, repeats or
skips an alert. Alerts are unique per (rule, key, window) in the table (deduplication), and a rule stays
quiet for `cooldown` windows on a key after alerting on it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from genforge.apps.monitor.analytics import Window, windows
from genforge.apps.monitor.channels import deliver
from genforge.apps.monitor.rules import Rule, RuleSet, definition, fold, initial_state
from genforge.apps.monitor.tables import (
    MonitorAlert,
    MonitorItem,
    MonitorOffset,
    MonitorRuleState,
    MonitorText,
)

log = logging.getLogger("genforge.monitor")
EXAMPLES = 5


def latest_time(engine: Engine) -> int | None:
    with Session(engine) as session:
        return session.scalar(select(func.max(MonitorItem.t)))


def examples(session: Session, rule: Rule, key: str, start: int) -> list[dict[str, Any]]:
    """The items behind an alert: the window's most confident negative items (volume: any sentiment)."""
    query = select(MonitorItem.id, MonitorText.text, MonitorItem.sentiment, MonitorItem.confidence,
                   MonitorItem.source, MonitorItem.t.label("time")).join(MonitorText, MonitorText.digest == MonitorItem.digest).where(
        MonitorItem.t >= start, MonitorItem.t < start + rule.width, MonitorItem.duplicate.is_(False))
    if rule.by == "topic":
        query = query.where(MonitorItem.topic == key)
    elif rule.by == "entity":
        query = query.where(MonitorItem.entity == key)
    if rule.kind != "volume":
        query = query.where(MonitorItem.sentiment == "negative")
    rows = session.execute(query.order_by(MonitorItem.confidence.desc(), MonitorItem.id).limit(EXAMPLES))
    return [{"id": r.id, "text": r.text, "sentiment": r.sentiment, "confidence": round(r.confidence, 3),
             "source": r.source, "t": r.time} for r in rows]


def describe(rule: Rule, key: str, start: int, value: float, baseline: float, score: float, n: int) -> str:
    when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M")
    what = f"{rule.by} '{key}'" if rule.by != "all" else "all items"
    if rule.kind == "volume":
        return f"{rule.name}: {n} items on {what} in the {rule.window} from {when} UTC (baseline {baseline:.1f}, z={score:.1f})"
    stat = {"ewma_z": f"z={score:.1f}", "cusum": f"CUSUM={score:.1f}",
            "binomial_cusum": f"CUSUM={score:.1f} nats for x{rule.shift:g}", "entity_negative": "turned negative"}[rule.kind]
    return (f"{rule.name}: negative share of {what} {value:.0%} in the {rule.window} from {when} UTC "
            f"(baseline {baseline:.0%}, {stat}, n={n})")


def saved_states(session: Session, rule: Rule) -> dict[str, MonitorRuleState]:
    """The rule's stored detector state per key; none (deleted) when the rule's settings changed since."""
    rows = session.scalars(select(MonitorRuleState).where(MonitorRuleState.rule == rule.name)).all()
    if any(row.definition != definition(rule) for row in rows):
        for row in rows:
            session.delete(row)
        session.flush()  # before the same keys are added again
        return {}
    return {row.key: row for row in rows}


def evaluate_rule(session: Session, rule: Rule, now: int) -> list[MonitorAlert]:
    """New alerts of one rule over the windows completed by time `now` (added to `session`, not committed).

    Each key's detector state is folded forward from where the last evaluation left it (stored with the mark),
    so evaluating hour by hour gives exactly the alerts of one evaluation over everything. Without a state (a
    new rule, changed settings, a database from before the states) it is built from the first item on, and
    only windows from the mark on may alert."""
    width = rule.width
    closed = now - rule.lateness  # items up to `lateness` behind the newest may still arrive
    complete = closed - closed % width  # windows starting before this have ended
    mark = session.get(MonitorOffset, f"alerts:{rule.name}")
    done = mark.position if mark else None
    if done is not None and done >= complete:
        return []
    saved = saved_states(session, rule)
    since = min((row.position for row in saved.values()), default=None)
    series = windows(session.get_bind(), by=rule.by, width=width, since=since, until=complete,
                     keys=rule.keys or None)
    digest, new = definition(rule), []
    for key in sorted(set(series) | set(saved)):
        row, cells = saved.get(key), {w.start: w for w in series.get(key, [])}
        start = row.position if row else min(cells)
        pending = [cells.get(s) or Window(key, s) for s in range(start, complete, width)]
        state = json.loads(row.state) if row else initial_state(rule)
        hits = fold(rule, state, pending)
        last = session.scalar(select(func.max(MonitorAlert.window)).where(
            MonitorAlert.rule == rule.name, MonitorAlert.key == key)) if hits else None
        for hit in hits:
            w = pending[hit.index]
            if done is not None and w.start < done:
                continue
            if last is not None and w.start - last <= rule.cooldown * width:
                continue
            last = w.start
            alert = MonitorAlert(rule=rule.name, kind=rule.kind, by=rule.by, key=key, window=w.start, width=width,
                                 value=hit.value, baseline=hit.baseline, score=hit.score, count=w.n,
                                 message=describe(rule, key, w.start, hit.value, hit.baseline, hit.score, w.n),
                                 examples=json.dumps(examples(session, rule, key, w.start), ensure_ascii=False),
                                 delivered="{}")
            session.add(alert)
            new.append(alert)
        if row is None:
            session.add(MonitorRuleState(rule=rule.name, key=key, definition=digest, position=complete,
                                         state=json.dumps(state)))
        else:
            row.position, row.state = complete, json.dumps(state)
    session.merge(MonitorOffset(stream=f"alerts:{rule.name}", position=complete))
    return new


def evaluate(engine: Engine, rules: RuleSet, now: int | None = None, send: bool = True) -> list[dict[str, Any]]:
    """Evaluate every rule up to `now` (default: the latest item's time); store, deliver (unless `send` is
    off: then call `send_alerts` yourself, e.g. outside a lock) and return the new alerts."""
    now = latest_time(engine) if now is None else now
    if now is None:
        return []
    with Session(engine) as session, session.begin():
        fired = [a for rule in rules.rules for a in evaluate_rule(session, rule, now)]
        session.flush()
        alerts = [alert_dict(a) for a in fired]
    if send:
        send_alerts(engine, rules, alerts)
    return alerts


def send_alerts(engine: Engine, rules: RuleSet, alerts: list[dict[str, Any]]) -> None:
    """Deliver stored alerts on their rules' channels and record the outcome per channel."""
    channels = {r.name: r.channels for r in rules.rules}
    for alert in alerts:
        alert["delivered"] = deliver(alert, channels.get(alert["rule"], ["log"]), rules.channels)
        with Session(engine) as session, session.begin():
            session.get(MonitorAlert, alert["id"]).delivered = json.dumps(alert["delivered"])


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset: SQLite hands stored times back naive, and an alert's `acknowledged` must
    not carry the offset when just set and lose it when read again (a client would take it for local time)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def alert_dict(a: MonitorAlert) -> dict[str, Any]:
    return {"id": a.id, "rule": a.rule, "kind": a.kind, "by": a.by, "key": a.key, "window": a.window,
            "width": a.width, "value": round(a.value, 4), "baseline": round(a.baseline, 4),
            "score": round(a.score, 3), "count": a.count, "message": a.message,
            "examples": json.loads(a.examples), "delivered": json.loads(a.delivered or "{}"),
            "created": iso_utc(a.created), "acknowledged": iso_utc(a.acknowledged),
            "acknowledged_by": a.acknowledged_by}


def list_alerts(engine: Engine, *, since: int | None = None, until: int | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    with Session(engine) as session:
        query = select(MonitorAlert)
        if since is not None:
            query = query.where(MonitorAlert.window >= since)
        if until is not None:
            query = query.where(MonitorAlert.window < until)
        rows = session.scalars(query.order_by(MonitorAlert.window.desc(), MonitorAlert.id.desc()).limit(limit))
        return [alert_dict(a) for a in rows]


def acknowledge(engine: Engine, alert_id: int, by: str) -> dict[str, Any] | None:
    """Mark an alert seen (the first acknowledgement stays); the alert, or None if there is no such id."""
    with Session(engine) as session, session.begin():
        alert = session.get(MonitorAlert, alert_id)
        if alert is None:
            return None
        if alert.acknowledged is None:
            alert.acknowledged, alert.acknowledged_by = datetime.now(UTC), by
        session.flush()
        return alert_dict(alert)
