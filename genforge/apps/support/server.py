"""`genforge app support serve|ask|tickets`: the assistant on the serving stack, in a terminal, its tickets.

`make_app(cfg)` composes the serving stage (`build_state` with the assistant's chat model, or its encoder
when it has none, as the served model; keys, safety, database) with the assistant's router; `serve` runs
it as `genforge serve` runs its app (`run_app`: a dead decoding worker ends it with an error). The serving
stage's exposure check applies: no key, no listening beyond this machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genforge.apps.support.config import AskConfig, SupportServeConfig, TicketsConfig
from genforge.serve.config import ServeConfig, default_db_url

log = logging.getLogger("genforge.serve")


def serve_config(cfg: SupportServeConfig) -> ServeConfig:
    from genforge.apps.support.assistant import read_meta

    folder = Path(cfg.assistant)
    meta = read_meta(folder)
    model = folder / "chat" if meta.get("chat") else Path(meta["encoder"])
    return ServeConfig(model=model, name=f"{cfg.name}-{'chat' if meta.get('chat') else 'encoder'}", host=cfg.host,
                       port=cfg.port, api_key=cfg.api_key, insecure_open=cfg.insecure_open, db=cfg.db,
                       blocklist=list(cfg.blocklist), moderation_model=cfg.moderation_model,
                       redact_pii=cfg.redact_pii, threads=cfg.threads, log_level=cfg.log_level,
                       max_tokens=max(cfg.max_new_tokens, 16))


def make_app(cfg: SupportServeConfig, keys: Any = None) -> tuple[Any, Any]:
    """(FastAPI app, ServerState) of the assistant on the serving stack."""
    from genforge.apps.support.assistant import load_assistant
    from genforge.apps.support.routes import router
    from genforge.apps.support.service import Desk
    from genforge.serve.app import create_app
    from genforge.serve.server import build_state

    scfg = serve_config(cfg)
    scfg.check()
    state = build_state(scfg, keys)
    desk = Desk(load_assistant(cfg.assistant), state.keys.engine, state.safety, cfg.name, cfg.max_new_tokens)
    return create_app(state, routers=(router(desk),)), state


def serve(cfg: SupportServeConfig) -> None:
    """Serve the assistant until interrupted (blocking)."""
    from genforge.serve.logs import setup_logging
    from genforge.serve.server import _keys, check_exposure, run_app

    scfg = serve_config(cfg)
    keys = _keys(scfg)
    check_exposure(scfg, keys)
    setup_logging(cfg.log_level)
    app, _ = make_app(cfg, keys)
    log.info("serving the support assistant", extra={"model": cfg.name, "url": f"http://{cfg.host}:{cfg.port}/support"})
    run_app(app, cfg.host, cfg.port)


def ask(cfg: AskConfig) -> list[dict[str, Any]]:
    """Answer one conversation in the terminal (each question a turn), stored like served answers."""
    import typer

    from genforge.apps.support.assistant import load_assistant
    from genforge.apps.support.routes import summary
    from genforge.apps.support.service import Desk, converse
    from genforge.serve.db import connect

    desk = Desk(load_assistant(cfg.assistant), connect(cfg.db or default_db_url()), max_new_tokens=cfg.max_new_tokens)
    session, out = None, []
    for question in cfg.question:
        typer.secho(f"> {question}", bold=True)
        run = converse(desk, question, session_id=session, caller="cli")
        while True:
            try:
                typer.echo(next(run), nl=False)
            except StopIteration as end:
                result = summary(end.value)
                break
        session = result["session_id"]
        typer.secho(f"\n[{result['action']}, confidence {result['confidence']:.3f}]", dim=True)
        out.append(result)
    return out


def tickets(cfg: TicketsConfig) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    from genforge.apps.support.tables import close_ticket, list_tickets
    from genforge.errors import ConfigError
    from genforge.serve.db import connect

    engine = connect(cfg.db or default_db_url())
    for ticket_id in cfg.close:
        if not close_ticket(engine, ticket_id):
            raise ConfigError(f"no open ticket #{ticket_id} (list them with `genforge app support tickets`)")
        Console().print(f"closed ticket #{ticket_id}")
    rows = list_tickets(engine, cfg.status, cfg.limit)
    table = Table(title=f"support tickets ({cfg.status})")
    for col in ("id", "created", "status", "session", "question", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["created"].strftime("%Y-%m-%d %H:%M"), r["status"], r["session"][:12],
                      r["question"][:60], r["reason"][:50])
    Console().print(table)
    return rows
