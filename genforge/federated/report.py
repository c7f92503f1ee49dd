"""What a federated run leaves behind: rounds.jsonl, TensorBoard scalars, rounds.png, the model folder.

`rounds.jsonl` holds one line per round (round 0 = the initial model): the global validation
metrics, every participating client's metrics (the round and learning rate it trained at, loss, examples,
bytes each way), how many clients were sampled, failed or rejected, the bytes communicated and, with DP,
the privacy spent so far.
The run folder ends as a normal genforge model folder: its manifest has the lineage centralized training
records (the server's inputs, the parent) plus each client's data hash (never the data) and the federation's
settings, and its card is the centralized command's card followed by the federation's section.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from genforge.artifacts import (
    MANIFEST,
    atomic_write_text,
    now_iso,
    read_manifest,
    sha256_file,
    write_manifest,
)

ROUNDS = "rounds.jsonl"


def parse_row(line: str) -> dict[str, Any] | None:
    """A row of rounds.jsonl; None for a line a kill cut short (its round is trained again)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("round"), int) else None


class RoundLog:
    """rounds.jsonl and the TensorBoard scalars; a resumed run keeps the rows of rounds up to `keep` and counts
    its seconds on from `seconds`."""

    def __init__(self, out: Path, keep: int = 0, seconds: float = 0.0):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(out) / ROUNDS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if keep and self.path.is_file():
            self.rows = [r for r in map(parse_row, self.path.read_text(encoding="utf-8").splitlines())
                         if r is not None and r["round"] <= keep]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.writer = SummaryWriter(str(Path(out) / "logs"), purge_step=keep + 1 if keep else None)
        self.started = time.time() - seconds

    def seconds(self) -> float:
        return round(time.time() - self.started, 2)

    def write(self, server_round: int, metrics: dict[str, float], clients: list[dict[str, float]],
              counts: dict[str, int], privacy: dict[str, float] | None) -> None:
        row = {"round": server_round, "seconds": self.seconds(),
               **{f"val_{k}": v for k, v in metrics.items()}, **counts,
               "bytes": int(sum(c.get("bytes-up", 0) + c.get("bytes-down", 0) for c in clients)),
               "clients": [{k.replace("-", "_"): (int(v) if k in ("partition-id", "examples", "round") else v)
                            for k, v in c.items()} for c in clients]}
        if privacy:
            row["privacy"] = privacy
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(f"global/{key}", value, server_round)
        for c in clients:
            if math.isfinite(c.get("train-loss", math.nan)):
                self.writer.add_scalar(f"client{int(c['partition-id'])}/train_loss", c["train-loss"], server_round)
        self.writer.add_scalar("comms/bytes", row["bytes"], server_round)

    def close(self) -> None:
        self.writer.close()


def plot_rounds(rows: list[dict[str, Any]], metric: str, out: Path,
                baselines: dict[str, list[tuple[int, float]]] | None = None) -> Path | None:
    """rounds.png: the global validation `metric` per round, with centralized/local-only curves if given."""
    points = [(r["round"], r[f"val_{metric}"]) for r in rows if f"val_{metric}" in r]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*points, strict=True), "o-", label="federated (global model)")
    for name, curve in (baselines or {}).items():
        if curve:
            ax.plot(*zip(*curve, strict=True), "--", label=name)
    ax.set_xlabel("round (or the same number of local-step blocks)")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def federation_section(cfg: Any, clients: list[dict[str, Any]], privacy: dict[str, float] | None) -> list[str]:
    """The card's account of the federation: silos, rounds, privacy, and each client's size and data hash."""
    lines = ["## Federated training", "",
             f"Trained with Flower over {cfg.clients} clients ({cfg.partition} partition"
             + (f", alpha {cfg.alpha}" if cfg.partition in ("dirichlet", "quantity") else "") + f"), strategy "
             f"{cfg.strategy}, {cfg.rounds} rounds of "
             + (f"{cfg.local_epochs:g} local epochs" if cfg.local_epochs else f"{cfg.local_steps} local steps")
             + ". The data never left the clients: the lineage lists the server's own inputs, the clients' data "
             "only by hash (below).", ""]
    if privacy:
        lines += [f"Client-level differential privacy: noise multiplier {cfg.dp_noise:g}, clipping norm "
                  f"{cfg.dp_clip:g}; epsilon {privacy['epsilon']:.4g} at delta {privacy['delta']:g} after "
                  f"{privacy['releases']} noisy rounds (Rényi DP accountant, no amplification by sampling "
                  "claimed: an upper bound).", ""]
    if cfg.secagg:
        lines += ["Secure aggregation (SecAgg+): the server saw only the sum of the clients' updates.", ""]
    lines += ["| client | examples | data sha256 |", "|---|---|---|"]
    lines += [f"| {c['client']} | {c['examples']} | `{c['data_sha256']}` |" for c in clients]
    lines += ["", "Figures: `logs/rounds.png` (validation per round), `logs/partition.png` (data per client); "
              "`rounds.jsonl` has every round's numbers.", ""]
    return lines


def lineage_of(task: Any) -> tuple[list[Path], dict[str, Any] | None, dict[str, Any]]:
    """(the inputs the server read, the parent manifest, the manifest's `model` record), as centralized training
    records them. The silos are no inputs: they stay with their clients, and `federated.clients` has their hashes.
    The server reads the data it splits (--data) and its validation data; the parent is the base model's
    manifest or, for pretraining, the packed data's (the base model then goes in `model.base_model`)."""
    from genforge.models.presets import count_params
    from genforge.train.data import read_pack

    cfg = task.cfg
    base = read_manifest(cfg.model) if getattr(cfg, "model", None) and (Path(cfg.model) / MANIFEST).is_file() \
        else None
    if task.kind != "pretrain":
        inputs = ([cfg.data] if cfg.partition != "by-file" else []) + ([cfg.val_data] if cfg.val_data else [])
        params = sum(p.numel() for p in task.model.parameters())
        return [Path(p) for p in inputs], base, {"params": params, "base_model": str(cfg.model)}
    folder = Path(cfg.data if cfg.partition != "by-file" else cfg.client_data[0])  # where the server validates
    inputs = ([folder / "train.bin"] if cfg.partition != "by-file" else []) + [folder / "val.bin"]
    counts = count_params(task.model)
    return inputs, read_pack(folder), {"architecture": type(task.model).__name__, "params": counts["total"],
                                       "non_embedding_params": counts["non_embedding"], "base_model": base}


def write_card(task: Any, metrics: dict[str, Any], inputs: list[Path], parent: dict[str, Any] | None,
               extra: dict[str, Any], section: list[str]) -> None:
    """README.md: the centralized command's card (front matter, results, lineage, configuration, how to load it)
    followed by the federation's section."""
    from genforge.config import to_dict
    from genforge.finetune.card import write_card as write_finetune_card
    from genforge.models.card import render_model_card

    cfg = task.cfg
    path = Path(cfg.out) / "README.md"
    if task.kind == "pretrain":
        preview = {"stage": "pretrain", "created": now_iso(), "config": to_dict(cfg), "parent": parent,
                   "metrics": metrics, "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
                   **extra}
        text = render_model_card(cfg.out, preview)
    else:
        text = write_finetune_card(cfg.out, task.kind, cfg, metrics, parent, inputs).read_text(encoding="utf-8")
    atomic_write_text(path, text.rstrip("\n") + "\n\n" + "\n".join(section))


def finish(task: Any, info: dict[str, Any], rows: list[dict[str, Any]], privacy: dict[str, float] | None) -> Path:
    """Export the global model and write rounds.png, the card and the manifest (last)."""
    cfg = task.cfg
    out = Path(cfg.out)
    shutil.rmtree(Path(info["work_dir"]), ignore_errors=True)  # the clients' scratch checkpoints
    final = rows[-1] if rows else {}
    metrics: dict[str, Any] = {"task": task.kind, "rounds": cfg.rounds,
                               **{k: v for k, v in final.items() if k.startswith("val_")}}
    metrics.update(task.export(metrics))
    metrics["bytes_total"] = sum(r["bytes"] for r in rows)
    metrics["bytes_per_round"] = round(metrics["bytes_total"] / max(1, len(rows) - 1))
    metrics["failed_replies"] = sum(r.get("failed", 0) for r in rows)
    metrics["rejected_updates"] = sum(r.get("rejected", 0) for r in rows)
    metrics["seconds"] = final.get("seconds")
    if privacy:
        metrics.update({"dp_epsilon": privacy["epsilon"], "dp_delta": privacy["delta"]})
    select = "accuracy" if task.kind == "classify" else "loss"
    plot_rounds(rows, select, out / "logs" / "rounds.png", info.get("baselines"))
    inputs, parent, model = lineage_of(task)
    extra = {"task": task.kind, "model": model,
             **({"objective": cfg.objective} if task.kind == "pretrain" else {}),
             "federated": {"engine": cfg.engine, "strategy": cfg.strategy, "clients": info["clients"],
                           "privacy": privacy},
             **({"labels": info["labels"]} if info.get("labels") else {})}
    write_card(task, metrics, inputs, parent, extra, federation_section(cfg, info["clients"], privacy))
    write_manifest(out, "finetune" if task.kind != "pretrain" else "pretrain", cfg, inputs=inputs, parent=parent,
                   metrics=metrics, started=info.get("started"), extra=extra)
    return out
