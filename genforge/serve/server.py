"""`genforge serve` and `genforge keys`: load the models, check the exposure, run uvicorn; manage keys.

`build_state(cfg)` does everything but listening (models, keys, safety checks, the A/B experiment) (tests and embedders run the app their own way);
`serve(cfg)` adds the safety check on the host and runs uvicorn until Ctrl-C. `run_app` is how `serve` and every
application's server listen: a dead background worker (a model's decoding `Engine`, a `Worker` thread such as the
monitor's poller) ends the process with an error instead of leaving it up without the worker.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from genforge.errors import ArtifactError, ConfigError
from genforge.serve.config import (
    KEY_ENV,
    KeyCreateConfig,
    KeyListConfig,
    KeyRevokeConfig,
    ServeConfig,
    default_db_url,
)

log = logging.getLogger("genforge.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keys(cfg: ServeConfig) -> Any:
    from genforge.serve.db import connect
    from genforge.serve.keys import Keys

    return Keys(connect(cfg.db or default_db_url()), cfg.api_key or os.environ.get(KEY_ENV), cfg.rate_limit)


def check_exposure(cfg: ServeConfig, keys: Any) -> None:
    """Refuse to listen beyond this machine while anyone could call the API without a key."""
    if not is_loopback(cfg.host) and not cfg.insecure_open and not keys.required():
        raise ConfigError(f"refusing to serve on {cfg.host} without an API key: pass --api-key KEY (or set "
                          f"{KEY_ENV}), create one with `genforge keys create NAME`, or add --insecure-open")


def check_port(host: str, port: int) -> None:
    """Refuse a --host/--port another process listens on before the models load: uvicorn would find out only
    after loading them, and say so in a JSON log line among the others."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT does not count
            probe.bind(address)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}): pick another --port or --host, "
                          "or stop what uses it") from None


def warn_idle_rate_limit(cfg: ServeConfig, keys: Any) -> None:
    """--rate-limit is per API key: on a server without keys every caller is anonymous and unlimited."""
    if cfg.rate_limit and not keys.required():
        import typer

        typer.secho(f"warning: --rate-limit {cfg.rate_limit} has no effect without API keys (anonymous callers are "
                    f"unlimited): pass --api-key, set {KEY_ENV} or create one with `genforge keys create NAME`",
                    fg="yellow", err=True)


def build_state(cfg: ServeConfig, keys: Any = None) -> Any:
    """Load every served folder and wire the server's parts (engines are started by the app's lifespan)."""
    import torch

    from genforge.serve.ab import Experiment, arm_weights
    from genforge.serve.app import ServerState
    from genforge.serve.metrics import Metrics
    from genforge.serve.models import load_served
    from genforge.serve.safety import build_safety

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    metrics = Metrics()
    models = {}
    for variant in cfg.variants():
        log.info("loading model", extra={"model": variant.name, "path": str(variant.path)})
        models[variant.name] = load_served(variant, cfg, metrics)
    keys = keys or _keys(cfg)
    weights = arm_weights(cfg.variants(), {name: m.kind for name, m in models.items()})
    experiment = Experiment(cfg.variants()[0].name, weights, keys.engine) if weights else None
    if experiment is not None:
        experiment.start()
        log.info("A/B experiment", extra={"model": experiment.name, "weights": weights})
    return ServerState(cfg=cfg, models=models, keys=keys, metrics=metrics, safety=build_safety(cfg),
                       experiment=experiment)


def serve(cfg: ServeConfig) -> None:
    """`genforge serve`: the OpenAI-compatible API until interrupted."""
    from genforge.serve.app import create_app
    from genforge.serve.logs import setup_logging

    keys = _keys(cfg)
    check_exposure(cfg, keys)
    warn_idle_rate_limit(cfg, keys)
    for variant in cfg.variants():  # before the JSON logs start, so a typo is the only line printed
        if not variant.path.is_dir():
            raise ArtifactError(f"model {variant.path} is not a folder (expected a genforge run folder or an HF "
                                "model folder)")
    check_port(cfg.host, cfg.port)
    setup_logging(cfg.log_level)
    state = build_state(cfg, keys)
    for m in state.models.values():
        log.info("serving", extra={"model": m.name, "kind": m.kind, "context": m.context,
                                   "backend": m.decoder.backend if m.decoder else None,
                                   "url": f"http://{cfg.host}:{cfg.port}/v1"})
    run_app(create_app(state), cfg.host, cfg.port)


class Worker:
    """A background thread a server depends on (the monitor's file poller). It watches like an `Engine`: what
    escapes `target` is logged and kept in `failure`, and `on_failure` is told, so `run_app` stops the server
    rather than leaving it up while nothing does the thread's work any more."""

    def __init__(self, label: str, target: Callable[..., None], *args: Any):
        self.label = label  # "the file poller of the monitor": what failed, in the server's last line
        self.failure: Exception | None = None
        self.on_failure: Callable[[Exception], None] | None = None
        self._target, self._args = target, args
        self._thread = threading.Thread(target=self._run, name="genforge-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._target(*self._args)
        except Exception as e:
            log.exception("%s failed", self.label)
            self.failure = e
            if self.on_failure is not None:
                self.on_failure(e)


def run_app(app: Any, host: str, port: int, workers: Sequence[Any] = ()) -> None:
    """Serve `app` (a `create_app` app) with uvicorn until Ctrl-C, or until a worker it depends on dies: the
    decoding engines of its models and `workers` (anything with `label`, `failure` and `on_failure`, as `Worker`).
    A dead worker's requests already failed (500/503); the server then stops, and this raises one line naming
    the worker, so the process exits non-zero instead of staying up without it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=5))
    watched = [m.engine for m in app.state.genforge.models.values() if m.engine is not None] + list(workers)
    for worker in watched:
        worker.on_failure = lambda _: setattr(server, "should_exit", True)
    if not any(w.failure is not None for w in watched):  # one may have died before it was watched
        server.run()
    failed = next((w for w in watched if w.failure is not None), None)
    if failed is not None:
        raise RuntimeError(f"{failed.label} failed ({failed.failure!r}); see the log above")
    if not server.started:
        raise SystemExit(3)  # uvicorn could not start (a busy port, ...): it logged why


def keys_create(cfg: KeyCreateConfig) -> dict[str, Any]:
    import typer

    from genforge.serve.db import connect
    from genforge.serve.keys import create_key

    row, secret = create_key(connect(cfg.db or default_db_url()), cfg.name, cfg.rate_limit or None)
    typer.echo(secret)
    typer.secho(f"created key '{row['name']}' (id {row['id']}); the key above is shown only once: store it now",
                err=True, dim=True)
    return {**row, "key": secret}


def keys_list(cfg: KeyListConfig) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    from genforge.serve.db import connect
    from genforge.serve.keys import list_keys

    rows = list_keys(connect(cfg.db or default_db_url(), create=False))
    table = Table(title="API keys")
    for col in ("id", "name", "prefix", "rate_limit", "created", "revoked"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row[c] if row[c] is not None else "-") for c in ("id", "name", "prefix", "rate_limit",
                                                                            "created", "revoked")))
    Console().print(table)
    return rows


def keys_revoke(cfg: KeyRevokeConfig) -> dict[str, Any]:
    import typer

    from genforge.serve.db import connect
    from genforge.serve.keys import revoke_key

    row = revoke_key(connect(cfg.db or default_db_url(), create=False), cfg.key)
    if row["already_revoked"]:  # idempotent: exit 0, as the key is revoked as asked, but say nothing changed
        typer.echo(f"key '{row['name']}' (id {row['id']}) was already revoked at {row['revoked']}; nothing changed")
    else:
        typer.echo(f"revoked key '{row['name']}' (id {row['id']}) at {row['revoked']}")
    return row
