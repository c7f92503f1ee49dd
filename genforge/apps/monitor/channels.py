"""Alert delivery: the log, a webhook (HTTP POST of the alert as JSON) and e-mail (SMTP).

Delivery happens after the alert is committed, and its outcome is stored per channel ("ok" or the
error): a dead webhook or mail server never loses an alert nor stops the monitor, and the dashboard
shows what reached whom. Standard library only (urllib, smtplib): no client to configure or pin.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

log = logging.getLogger("genforge.monitor")


def send_webhook(alert: dict[str, Any], cfg: Any) -> None:
    body = json.dumps({"type": "genforge.monitor.alert", "alert": alert}, ensure_ascii=False).encode()
    request = urllib.request.Request(cfg.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **cfg.headers})
    with urllib.request.urlopen(request, timeout=cfg.timeout) as response:
        if response.status >= 300:
            raise OSError(f"webhook answered HTTP {response.status}")


def send_email(alert: dict[str, Any], cfg: Any) -> None:
    msg = EmailMessage()
    msg["Subject"] = f"[genforge monitor] {alert['message'][:150]}"
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    lines = [alert["message"], ""] + [f"- [{e['sentiment']} {e['confidence']:.2f}] {e['text']}"
                                      for e in alert["examples"]]
    msg.set_content("\n".join(lines) + f"\n\nalert id {alert['id']} (acknowledge it in the dashboard)\n")
    smtp_cls = smtplib.SMTP_SSL if cfg.ssl else smtplib.SMTP
    with smtp_cls(cfg.host, cfg.port, timeout=cfg.timeout) as smtp:
        if cfg.starttls:
            smtp.starttls()
        if cfg.username:
            smtp.login(cfg.username, os.environ.get(cfg.password_env or "", ""))
        smtp.send_message(msg)


def deliver(alert: dict[str, Any], names: list[str], channels: Any) -> dict[str, str]:
    """Send `alert` on each named channel; {channel: "ok" | "error: ..."}."""
    status = {}
    for name in names:
        try:
            if name == "log":
                log.warning("alert", extra={"alert": alert["message"], "alert_id": alert["id"]})
            elif name == "webhook":
                send_webhook(alert, channels.webhook)
            elif name == "email":
                send_email(alert, channels.email)
            status[name] = "ok"
        except (OSError, smtplib.SMTPException, urllib.error.URLError) as e:
            log.error("alert delivery failed", extra={"channel": name, "alert_id": alert["id"], "error": str(e)})
            status[name] = f"error: {e}"[:300]
    return status
