"""The Flower ServerApp: strategies, the guard against broken or poisoned replies, global evaluation.

The server builds the same model as the clients (same config, same seed), sends its trainable
tensors, and lets a Flower strategy run the rounds: FedAvg, FedProx, FedAdam/FedYogi (server-side
Adam/Yogi on the averaged update, Reddi et al. 2021), or a robust coordinate-wise median / trimmed
mean (Yin et al. 2018) that a few scaled updates cannot drag away. Every strategy sits inside
`Guarded`, which drops replies carrying NaN/inf (they would poison any mean and even a median) and
skips, rather than aborts, a round with fewer usable replies than `--min-fit-clients`: a client that
crashes or times out only shrinks its round. After each round the global model is scored on the
validation data and the round is logged (`report.RoundLog`); the last global model is exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Strategy,
)
from flwr.supercore import log

from genforge.errors import DataError
from genforge.federated.config import FAILURE, sampled_clients


def finite(msg: Message) -> bool:
    """True if every array of a reply is finite (no NaN/inf)."""
    return all(np.isfinite(a.numpy()).all() for record in msg.content.array_records.values()
               for a in record.values())


def in_dtypes(arrays: ArrayRecord, dtypes: dict[str, np.dtype]) -> ArrayRecord:
    """`arrays` cast to the dtypes of the clients' tensors. Flower's FedAdam returns float64 (its bias-corrected
    step is a numpy float64), which would double every later download and make a resumed run (whose checkpoint
    holds the model's float32) start from other numbers than an uninterrupted one."""
    return ArrayRecord({k: Array(a.numpy().astype(dtypes[k], copy=False)) for k, a in arrays.items()})


class Guarded(Strategy):
    """A strategy that first drops failed and non-finite replies, and skips under-populated rounds."""

    def __init__(self, strategy: Strategy, min_replies: int) -> None:
        self.strategy = strategy
        self.min_replies = min_replies
        self.rounds: dict[int, dict[str, int]] = {}  # per round: sampled, replied, failed, rejected
        self.first_error: str | None = None  # the first failed client's reason, for a run that gets nowhere
        self.offset = 0  # rounds done before a resume: Flower counts from 1 again, the clients must not
        self.aggregated_before = False  # whether a round before the resume aggregated an update

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        if self.offset:  # under Flower's "[ROUND k/n]" line, which restarts at 1 after a resume
            log(INFO, "Flower's round %d is round %d of the run", server_round, server_round + self.offset)
        server_round += self.offset
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {"sampled": len(messages), "failed": 0, "rejected": 0, "used": 0}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.offset
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        failed = next((m for m in replies if m.has_error()), None)
        if failed is not None and self.first_error is None:
            reason = str(failed.error.reason or f"error code {failed.error.code}")  # Flower wraps it in its repr
            self.first_error = reason.rsplit("Message: ", 1)[-1].strip().rstrip("'>\"").strip()
        good = [m for m in ok if finite(m)]
        counts = self.rounds.setdefault(server_round, {"sampled": len(replies)})
        counts.update(failed=counts["sampled"] - len(ok), rejected=len(ok) - len(good), used=len(good))
        if counts["rejected"]:
            log(WARNING, "round %d: rejected %d update(s) with NaN/inf", server_round, counts["rejected"])
        if len(good) < max(1, self.min_replies):
            log(WARNING, "round %d: %d usable replies < %d: round skipped, the global model is kept",
                server_round, len(good), self.min_replies)
            counts["used"] = 0
            return None, None
        dtypes = {k: a.numpy().dtype for k, a in good[0].content["arrays"].items()}  # aggregating may empty it
        arrays, metrics = self.strategy.aggregate_train(server_round, good)
        return (None if arrays is None else in_dtypes(arrays, dtypes)), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                           ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round + self.offset, replies)

    def summary(self) -> None:
        self.strategy.summary()

    def failure(self) -> str | None:
        """Why the run trained nothing, when no round aggregated a single client update; else None."""
        if not self.rounds or self.aggregated_before or any(r.get("used") for r in self.rounds.values()):
            return None
        reason = f": the first client error was: {self.first_error}" if self.first_error else ""
        return f"no round aggregated a client update in {len(self.rounds)} round(s){reason}"


def client_rows(contents: list[RecordDict]) -> list[dict[str, float]]:
    return [dict(content["metrics"]) for content in contents]


def aggregate_metrics(sink: list[list[dict[str, float]]]) -> Any:
    """A train-metrics aggregator that keeps every client's row (for rounds.jsonl) and returns totals."""

    def aggregate(contents: list[RecordDict], weight_key: str) -> MetricRecord:
        rows = client_rows(contents)
        sink.append(rows)
        # the example-weighted mean over the clients whose loss is finite: a NaN loss is left out of the
        # weights too, or it would pull the mean towards 0
        finite_rows = [r for r in rows if math.isfinite(r["train-loss"])]
        total = sum(r.get("examples", 1.0) for r in finite_rows)
        loss = sum(r.get("examples", 1.0) * r["train-loss"] for r in finite_rows) / total if total else math.nan
        return MetricRecord({"train-loss": loss, "clients": float(len(rows)),
                             "bytes-up": sum(r["bytes-up"] for r in rows),
                             "bytes-down": sum(r["bytes-down"] for r in rows)})

    return aggregate


def build_strategy(cfg: Any, sink: list | None = None) -> Strategy:
    """The configured Flower strategy, DP-wrapped if asked, inside `Guarded`."""
    from genforge.federated.privacy import with_dp

    sampled = sampled_clients(cfg)
    common = {"fraction_train": cfg.fraction_fit, "fraction_evaluate": 0.0, "min_train_nodes": sampled,
              "min_available_nodes": cfg.clients, "weighted_by_key": "weight",
              "train_metrics_aggr_fn": aggregate_metrics(sink if sink is not None else [])}
    if cfg.strategy == "fedprox":
        strategy: Strategy = FedProx(proximal_mu=cfg.mu, **common)
    elif cfg.strategy == "fedavgm":
        strategy = FedAvgM(server_learning_rate=1.0, server_momentum=cfg.server_momentum, **common)
    elif cfg.strategy in ("fedadam", "fedyogi"):
        cls = FedAdam if cfg.strategy == "fedadam" else FedYogi
        strategy = cls(eta=cfg.server_lr, eta_l=cfg.lr, tau=cfg.server_tau, **common)
    elif cfg.strategy == "median":
        strategy = FedMedian(**common)
    elif cfg.strategy == "trimmed-mean":
        strategy = FedTrimmedAvg(beta=cfg.trim, **common)
    else:
        strategy = FedAvg(**common)
    if cfg.dp_noise > 0:
        strategy = with_dp(strategy, noise=cfg.dp_noise, clip=cfg.dp_clip, sampled=sampled,
                           population=cfg.clients, delta=cfg.dp_delta)
    return Guarded(strategy, cfg.min_fit_clients or 1)


def fail(info: dict[str, Any], reason: str) -> None:
    """Stop the run with `reason`, also left in the work folder for the caller (Flower logs and swallows it)."""
    from genforge.artifacts import atomic_write_text

    Path(info["work_dir"]).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(info["work_dir"]) / FAILURE, reason + "\n")
    raise DataError(reason)


def privacy_spent(strategy: Guarded) -> dict[str, float] | None:
    spent = getattr(strategy.strategy, "privacy_spent", lambda: None)()
    if spent is None:
        return None
    return {"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases}


def run_server(grid: Grid, path: str, context: Context) -> None:
    """Run the configured rounds on `grid`, then export the global model into the run folder."""
    import torch

    from genforge.federated.client import read_federation
    from genforge.federated.report import RoundLog, finish
    from genforge.federated.resume import load_round, renumbered_rounds, restore_server, save_round
    from genforge.federated.tasks import build_task, load_trainable, trainable
    from genforge.finetune.run import device

    kind, cfg, info = read_federation(path)
    torch.set_num_threads(max(1, int(cfg.client_cpus)))
    task = build_task(kind, cfg, None, info.get("labels"))
    sink: list[list[dict[str, float]]] = []
    strategy = build_strategy(cfg, sink)
    done, seconds = 0, 0.0
    if cfg.resume:
        saved = load_round(cfg.out)
        done, seconds = int(saved["round"]), float(saved["seconds"])
        load_trainable(task.model, saved["tensors"])
        restore_server(strategy, saved, cfg)
        strategy.offset = done
        log(INFO, "%s", renumbered_rounds(done, cfg.rounds))
    rounds = RoundLog(cfg.out, keep=done, seconds=seconds)

    def score(server_round: int, tensors: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, float]:
        server_round += done  # Flower numbers the rounds of this session from 1
        if done and server_round == done:  # the resumed model, scored and logged as that round already
            return {}
        load_trainable(task.model, tensors)
        task.model.to(device()).eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in task.score().items()}
        clients = sink[-1] if server_round and sink else []
        rounds.write(server_round, metrics, clients, counts, privacy_spent(strategy))
        if server_round:
            save_round(cfg.out, server_round, tensors, strategy, rounds.seconds())
        return metrics

    if cfg.secagg:
        from genforge.federated.secagg import run_secure

        def secure_score(server_round: int, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
            used = len(sink[-1]) if server_round and sink else 0
            counts = {"sampled": sampled_clients(cfg), "used": used} if server_round else {}
            return score(server_round, tensors, counts)

        # every client scales its update by its size over max_weight before quantising to +-clip: a size above it
        # (an unknown one counted as 0, say) is clipped and wraps the modular sum, a garbage model
        sizes = [c.get("examples") for c in info["clients"]]
        if None in sizes:
            fail(info, f"--secagg needs every client's size, and client {sizes.index(None)}'s is unknown")
        weight = max(sizes + [1])
        final = run_secure(grid, context, cfg, task, secure_score, sink, max_weight=float(weight), rounds_done=done)
    else:
        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            counts = strategy.rounds.get(server_round + done, {})
            return MetricRecord(score(server_round, arrays.to_torch_state_dict(), counts))

        result = strategy.start(grid, ArrayRecord(trainable(task.model)), num_rounds=cfg.rounds - done,
                                timeout=cfg.round_timeout, evaluate_fn=evaluate)
        final = result.arrays.to_torch_state_dict() if len(result.arrays) else trainable(task.model)
        failure = strategy.failure()
        if failure:  # an untrained model must not look like a result
            rounds.close()
            fail(info, failure)
    load_trainable(task.model, final)
    rounds.close()
    finish(task, info, rounds.rows, privacy_spent(strategy))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from genforge.federated.client import federation_path

    run_server(grid, federation_path(context), context)
