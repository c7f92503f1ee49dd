"""Training logs: metrics.jsonl (the record), TensorBoard events (to watch live), a loss-curve PNG (at the end).

Only the main process logs. On --resume the lines written after the checkpoint being resumed are
dropped first, so the record of a resumed run reads like that of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from genforge.artifacts import atomic_write_text

METRICS = "metrics.jsonl"


class MetricsLog:
    def __init__(self, log_dir: Path, enabled: bool = True, resume_step: int | None = None):
        self.path = Path(log_dir) / METRICS
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step] if resume_step else []
        # atomically: a kill mid-rewrite must not leave the record of the steps before the checkpoint empty
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.path.parent), purge_step=resume_step)

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        for key, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_settings(cfg: Any) -> dict[str, Any]:
    """The settings a checkpoint is trained with: the command's config but --resume. A resume may change them
    (steps, lr, evaluation) and the run's config.yaml then holds only the new values, so each checkpoint keeps
    its own, and `note_resume` says what changed."""
    from genforge.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k != "resume"}


def note_resume(log: MetricsLog, step: int, saved: dict[str, Any], settings: dict[str, Any], where: str) -> None:
    """Say which settings differ from those `saved` (a checkpoint's trainer state) was trained with: one stderr
    line and a `resume` record at `step` in metrics.jsonl. `where`: "step 300", "epoch 3". Main process only."""
    changed = {k: [old, settings.get(k)] for k, old in saved.get("settings", {}).items() if settings.get(k) != old}
    if not changed:
        return
    log.write(step, "resume", {"changed": changed})
    told = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
    print(f"resumed at {where} with other settings: {told} (kept in logs/metrics.jsonl)", file=sys.stderr)


def diverged(record: dict[str, Any]) -> bool:
    """True for a train record whose loss or gradient norm is NaN or infinite: the weights are lost and no later
    step brings them back, so the engine stops there and `genforge tune` fails that trial alone."""
    return any(isinstance(record.get(k), float) and not math.isfinite(record[k]) for k in ("loss", "grad_norm"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: skip it, keep the rest
            continue
    return rows


def plot_loss(log_dir: Path, out: Path | None = None) -> Path | None:
    """loss.png: training loss per logged step and validation loss per evaluation."""
    rows = read_metrics(Path(log_dir) / METRICS)
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train" and "loss" in r]
    val = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "val" and "loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", linewidth=1.5, markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = out or Path(log_dir) / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out
