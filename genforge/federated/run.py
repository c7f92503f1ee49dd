"""Starting a federation: Flower's simulation on this machine, or `flwr run` against a SuperLink.

`federated(cfg, kind)` resolves the silos (partition statistics, label set, each client's data
hash), writes `federation.json` (what every ServerApp/ClientApp process reads), then runs the same
two apps (`genforge.federated.server:app`, `genforge.federated.client:app`) either in Flower's
simulation (Ray, with sane resources: one core per client, `--total-cpus` in all) or on Flower's
deployment engine by submitting them as a Flower App to a running SuperLink. Either way the
ServerApp writes the run folder; this function checks it finished and prints the summary.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from genforge.artifacts import MANIFEST, begin_output, check_output, read_manifest, sha256_file, write_json
from genforge.config import to_dict
from genforge.errors import ConfigError, GenforgeError
from genforge.federated.config import FAILURE

APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "genforge-federation"
version = "1.0.0"
description = "genforge federated training (ServerApp + ClientApp from the installed genforge)"
dependencies = []

[tool.flwr.app]
publisher = "genforge"

[tool.flwr.app.components]
serverapp = "genforge.federated.server:app"
clientapp = "{clientapp}"

[tool.flwr.app.config]
federation = "{federation}"
"""


def silos(kind: str, cfg: Any, task: Any) -> tuple[list[dict[str, Any]], list[list[str]] | None]:
    """Each client's size and data hash (and its labels, for the statistics), as the clients will see them.

    The size (`examples`) is the number of training units the client reports as its weight (`len(silo.rows)`):
    SecAgg+ needs the largest one in advance (`max_weight`: each client scales its update by its weight over it
    before quantising), so a size the launcher cannot know refuses --secagg instead of corrupting the sum.

    A silo whose data is broken is that client's problem: it fails its rounds, not the run. Two mistakes are the
    command's, not a silo's, and stop it in one line before anything runs: a --client-data path that does not
    exist in simulation (the clients run here and read exactly that path; in deployment the silos live on the
    SuperNodes), and a silo holding labels outside the federation's label set (its client could never train).
    """
    from genforge.federated.partition import split

    if cfg.partition == "by-file":
        rows, labels_of = [], [] if kind == "classify" else None
        for k, path in enumerate(cfg.client_data):
            if cfg.engine == "simulation" and not Path(path).exists():
                raise ConfigError(f"--client-data of client {k}: {path} does not exist")
            row = {"client": k, "data": str(path), "data_sha256": None, "examples": None}
            found: list[list[str]] = []
            try:
                row["data_sha256"] = digest(path)
                row["examples"], found = units(kind, cfg, Path(path))
            except (GenforgeError, OSError) as e:
                if cfg.secagg:
                    raise ConfigError(f"--secagg weights each update by its client's size, and client {k}'s "
                                      f"is unknown: {e}") from None
                typer.secho(f"warning: client {k}: {e}", fg="yellow", err=True)
            unknown = sorted({lab for labs in found for lab in labs} - set(task.label_set or []))
            if task.label_set and unknown:  # with real silos, --val-data fixes the label set (the head's rows)
                raise ConfigError(f"client {k}'s data {path} holds labels that --val-data {cfg.val_data} lacks: "
                                  f"{unknown[:5]}; the head is built for the labels of --val-data: give one "
                                  "with every label")
            if labels_of is not None:
                labels_of.append([labs[0] for labs in found])
            rows.append(row)
        return rows, labels_of
    parts = split(cfg.partition, task.n, cfg.clients, alpha=cfg.alpha, seed=cfg.seed, labels=task.labels)
    source = digest(cfg.data)
    rows = [{"client": k, "examples": len(p), "data": str(cfg.data),
             "data_sha256": hashlib.sha256(f"{source}:{','.join(map(str, p))}".encode()).hexdigest()}
            for k, p in enumerate(parts)]
    labels_of = [[task.labels[i] for i in p] for p in parts] if task.labels is not None else None
    return rows, labels_of


def units(kind: str, cfg: Any, path: Path) -> tuple[int, list[list[str]]]:
    """(training units, each unit's labels) of the real silo `path`, read as its client reads it
    (`tasks.build_task(kind, cfg, path).n`: examples, dialogues or packed sequences, token windows), without
    building the model; a silo its client cannot train on is an error here too."""
    from genforge.federated.tasks import packed_silo, sft_examples, silo_examples

    if kind == "classify":
        train_set, _ = silo_examples(cfg, path)
        return len(train_set), [labs for _, labs in train_set]
    if kind == "sft":
        return len(sft_examples(cfg, path)[1]), []
    silo = packed_silo(cfg, path)
    return len(silo.tokens) // silo.window, []


def digest(path: Path) -> str:
    path = Path(path)
    if path.is_dir():  # a packed folder: its token files
        return hashlib.sha256("".join(sha256_file(p) for p in sorted(path.glob("*.bin"))).encode()).hexdigest()
    return sha256_file(path)


def simulate(cfg: Any, federation: Path) -> None:
    from flwr.simulation import run_simulation

    from genforge.federated.client import ENV
    from genforge.federated.client import app as plain_app
    from genforge.federated.secagg import secure_app
    from genforge.federated.server import app as server_app

    client_app = secure_app if cfg.secagg else plain_app

    os.environ[ENV] = str(federation)  # Ray's workers inherit it
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=cfg.clients,
                   backend_config={"client_resources": {"num_cpus": cfg.client_cpus, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cfg.total_cpus, "include_dashboard": False,
                                                 "logging_level": "error", "log_to_driver": True}})


def deploy(cfg: Any, federation: Path) -> None:
    """Submit the apps to the SuperLink at `cfg.superlink` with `flwr run` and wait for the run to end."""
    app_dir = Path(cfg.out) / "flwr_app"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(APP_TOML.format(
        federation=federation.resolve(),
        clientapp="genforge.federated.secagg:secure_app" if cfg.secagg else "genforge.federated.client:app"), encoding="utf-8")
    home = Path(os.environ.get("FLWR_HOME") or Path(cfg.out) / "flwr_home")
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "genforge"\n\n[superlink.genforge]\n'
                                      f'address = "{cfg.superlink}"\ninsecure = {str(cfg.insecure).lower()}\n',
                                      encoding="utf-8")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
    flwr = Path(sys.executable).with_name("flwr")
    try:  # --stream: Flower's log of the run shows here, and the command returns when the run ends
        done = subprocess.run([str(flwr), "run", str(app_dir), "genforge", "--stream"], env=env,
                              timeout=cfg.round_timeout * (cfg.rounds + 1))
    except subprocess.TimeoutExpired:
        raise GenforgeError(f"the run on {cfg.superlink} did not end within {cfg.rounds + 1} round timeouts") from None
    if done.returncode != 0:
        raise GenforgeError(f"flwr run against {cfg.superlink} failed (exit {done.returncode}, see its output above)")
    deadline = time.time() + cfg.round_timeout
    while not (Path(cfg.out) / MANIFEST).is_file() and time.time() < deadline:
        time.sleep(1)


def federated(cfg: Any, kind: str) -> Path:
    """Train `kind` (classify | sft | pretrain) federatedly as `cfg` says; return the model folder."""
    from genforge.federated.partition import plot_stats, stats
    from genforge.federated.resume import check_fresh, check_resume, clear
    from genforge.federated.tasks import build_task

    stage = "pretrain" if kind == "pretrain" else "finetune"  # what report.py writes: a model like any other
    check_output(cfg.out, stage)
    started = time.time()
    task = build_task(kind, cfg)  # the launcher's view: label set and partition statistics
    clients, labels_of = silos(kind, cfg, task)
    if cfg.resume:
        started = check_resume(cfg, cfg.out, clients).get("started", started)
    else:
        check_fresh(cfg.out)
    begin_output(cfg.out, stage)  # only now, with the data and model read: a bad one leaves an earlier run in --out whole
    if not cfg.resume:
        clear(cfg.out)
    partition = stats([[None] * (c["examples"] or 0) for c in clients], labels_of)
    write_json(Path(cfg.out) / "partition.json", partition)
    plot_stats(partition, Path(cfg.out) / "logs" / "partition.png")
    print_partition(partition)
    info = {"task": kind, "config": to_dict(cfg), "labels": task.label_set, "clients": clients,
            "work_dir": str(Path(cfg.out).resolve() / "clients"), "started": started}
    del task
    federation = Path(cfg.out) / "federation.json"
    write_json(federation, info)
    failure = Path(info["work_dir"]) / FAILURE
    failure.unlink(missing_ok=True)
    (simulate if cfg.engine == "simulation" else deploy)(cfg, federation.resolve())
    if not (Path(cfg.out) / MANIFEST).is_file():
        why = failure.read_text(encoding="utf-8").strip() if failure.is_file() else "see the Flower log above"
        raise GenforgeError(f"the federated run did not finish: {why}")
    manifest = read_manifest(cfg.out)
    print_summary(Path(cfg.out), manifest["metrics"])
    return Path(cfg.out)


def print_partition(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="data per client")
    for col in ("client", "examples", "labels"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["client"]), str(r["size"]), ", ".join(f"{k}: {v}" for k, v in r.get("labels", {}).items()))
    Console(stderr=True).print(table)


def print_summary(out: Path, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"federated {metrics.get('task')} -> {out}", show_header=False)
    for key, value in metrics.items():
        if not isinstance(value, list | dict):
            table.add_row(key, shown(value))
    Console(stderr=True).print(table)


def shown(value: Any) -> str:
    """A summary value: floats to 4 decimals, but a small one (DP's delta, 1e-5) in 3 significant digits, not 0."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"


def federated_classify(cfg: Any) -> Path:
    return federated(cfg, "classify")


def federated_sft(cfg: Any) -> Path:
    return federated(cfg, "sft")


def federated_pretrain(cfg: Any) -> Path:
    return federated(cfg, "pretrain")


def federated_recipe(cfg: Any) -> Path:
    """A recipe YAML: `task`, the centralized keys, and a `federated:` section with the federated keys."""
    from genforge.config import from_dict, read_yaml
    from genforge.errors import ConfigError
    from genforge.federated.config import CONFIGS

    recipe = read_yaml(cfg.recipe)
    kind = recipe.pop("task", None)
    if kind not in CONFIGS:
        raise ConfigError(f"recipe {cfg.recipe} needs `task: classify|sft|pretrain`, got {kind!r}")
    section = recipe.pop("federated", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"recipe {cfg.recipe}: `federated` must be a mapping of federated keys")
    return federated(from_dict(CONFIGS[kind], {**recipe, **section}), kind)
