"""The Flower ClientApp: one silo trains the global model on its own data for a round, on the engine.

A round is a call to the one training loop (`genforge.train.engine.train`) with `max_steps` = the
local steps (--local-steps, or --local-epochs passes over the silo), starting from the global trainable
tensors the server sent; the reply carries the new trainable tensors (LoRA adapters + head, or everything
for full training) and the silo's metrics.
The learning rate is constant within a round and follows the cosine over rounds, and each round
continues the silo's data order where the last one stopped. FedProx adds mu/2 ||w - w_global||^2.

The silo (model, tokenised data) is built once per process and reused across rounds: Flower's
simulation keeps its workers alive, so only the first round pays for loading. The federation's
description (`federation.json`: task, resolved config, label set) is found through the run config
(deployment) or the GENFORGE_FEDERATION environment variable (simulation).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from genforge.config import from_dict
from genforge.errors import ConfigError
from genforge.federated.config import CONFIGS
from genforge.federated.partition import split
from genforge.federated.tasks import Task, build_task, load_trainable, trainable

FEDERATION = "federation.json"
ENV = "GENFORGE_FEDERATION"


def read_federation(path: str | Path) -> tuple[str, Any, dict[str, Any]]:
    """(task kind, resolved config, the whole description) of a federation file written by the server."""
    info = json.loads(Path(path).read_text(encoding="utf-8"))
    return info["task"], from_dict(CONFIGS[info["task"]], info["config"]), info


def federation_path(context: Context) -> str:
    path = context.run_config.get("federation") or os.environ.get(ENV)
    if not path:
        raise ConfigError(f"no federation description: set run config 'federation' or ${ENV}")
    return str(path)


@dataclass
class Silo:
    task: Task
    rows: list[int]  # this client's training units
    work_dir: Path
    partition: int = 0


@functools.lru_cache(maxsize=2)
def silo(path: str, partition: int, data: str) -> Silo:
    """Client `partition`'s model and data: its own file (`data`, real silo) or its part of the split."""
    kind, cfg, info = read_federation(path)
    torch.set_num_threads(max(1, int(cfg.client_cpus)))
    if cfg.partition == "by-file" or data:
        own = Path(data) if data else cfg.client_data[partition]
        task = build_task(kind, cfg, own, info.get("labels"))
        rows = list(range(task.n))
    else:
        task = build_task(kind, cfg, None, info.get("labels"))
        rows = split(cfg.partition, task.n, cfg.clients, alpha=cfg.alpha, seed=cfg.seed, labels=task.labels)[partition]
    return Silo(task, rows, Path(info["work_dir"]) / f"client-{partition}", partition)


@dataclass
class Offset:
    """The silo's batches continued from step `start` (round r starts where round r-1 stopped)."""

    inner: Any
    start: int

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        return self.inner.batch(self.start + step, micro)

    def state_dict(self, step: int) -> dict[str, Any]:
        return self.inner.state_dict(self.start + step)


@dataclass
class Proximal:
    """FedProx: the objective plus mu/2 times the squared distance of the trainable weights to the global ones."""

    inner: Any
    anchors: list[tuple[torch.nn.Parameter, torch.Tensor]]
    mu: float
    name: str = "fedprox"

    def term(self) -> torch.Tensor:
        """mu/2 ||w - w_global||^2 over the trainable weights.

        A silo's first round takes the anchors while its model is still on the CPU; the engine then moves the
        model to its device (a GPU), and the anchors follow it there, once."""
        self.anchors = [(p, a.to(p.device)) for p, a in self.anchors]
        return self.mu / 2 * sum(((p - a) ** 2).sum() for p, a in self.anchors)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, metrics = self.inner.loss(model, batch)
        return loss + self.term(), metrics

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The inner objective's (the engine's micro-batch weights; they sum to 1, so the proximal term keeps
        its weight), None if it has none."""
        count = getattr(self.inner, "count", None)
        return count(batch) if count is not None else None


@dataclass
class SteppedProximal(Proximal):
    """FedProx around an objective that runs its own passes and backwards (adversarial training).

    The proximal term goes in once per micro-batch, after the inner step: inside the inner objective's loss it
    would be back-propagated once per pass (FGM and PGD train on a clean and a perturbed pass), pulling towards
    the global weights with 2 mu instead of mu."""

    def train_step(self, forward: Any, batch: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        loss = self.inner.train_step(forward, batch, scale)
        term = self.term()
        (term * scale).backward()
        return loss + term.detach()


def proximal(objective: Any, anchors: list[tuple[torch.nn.Parameter, torch.Tensor]], mu: float) -> Proximal:
    """FedProx around `objective`, the stepping kind when the objective runs its own backward passes."""
    kind = SteppedProximal if hasattr(objective, "train_step") else Proximal
    return kind(objective, anchors, mu)


def round_objective(objective: Any, cfg: Any, model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                    mu: float) -> Any:
    """The objective a round trains: the task's, adversarial as `cfg` says, then FedProx's pull to `tensors`
    (the global trainable weights) when mu > 0, on the outside so it counts once per micro-batch."""
    from genforge.adversarial.perturb import wrap_adversarial

    objective = wrap_adversarial(objective, cfg)
    if mu > 0:
        params = dict(model.named_parameters())
        objective = proximal(objective, [(params[k], v.to(params[k].device)) for k, v in tensors.items()], mu)
    return objective


def local_steps(cfg: Any, units: int) -> int:
    """Optimizer steps per round of a silo of `units` training units: --local-epochs passes, else --local-steps."""
    from genforge.finetune.batches import steps_for

    return steps_for(cfg.local_epochs, units, cfg.batch_size, cfg.grad_accum) if cfg.local_epochs else cfg.local_steps


def round_config(cfg: Any, server_round: int, steps: int) -> Any:
    """This round's engine config: `steps` at the round's LR (cosine over rounds), no evaluation."""
    from genforge.train.schedule import lr_at

    lr = lr_at(server_round - 1, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=0, max_steps=cfg.rounds)
    return dataclasses.replace(cfg, max_steps=steps, lr=lr, min_lr=lr, warmup_steps=0, eval_every=0,
                               save_every=0, log_every=steps, patience=0, resume=False, compile=False,
                               max_minutes=0.0)


def local_round(s: Silo, tensors: dict[str, torch.Tensor], server_round: int, mu: float
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the silo's copy of the model from the global `tensors`; (new tensors, metrics)."""
    from genforge.finetune.run import device
    from genforge.train.data import mix_seed
    from genforge.train.distributed import Dist
    from genforge.train.engine import train

    task, cfg = s.task, s.task.cfg
    load_trainable(task.model, tensors)
    objective = round_objective(task.objective, cfg, task.model, tensors, mu)
    steps = local_steps(cfg, len(s.rows))
    batches = Offset(task.batches_for(s.rows, s.partition), (server_round - 1) * steps)
    # dropout etc. drawn from (seed, client, round), not from whatever rounds this worker process ran before:
    # a run is reproducible and a resumed one trains its rounds exactly as an uninterrupted one would
    torch.manual_seed(mix_seed(cfg.seed, "client-round", s.partition, server_round))
    this_round = round_config(cfg, server_round, steps)
    result = train(task.model, objective, batches, this_round, s.work_dir, dist=Dist(device=device()))
    return trainable(task.model), {"train-loss": float(result.train_loss), "steps": float(result.steps),
                                   "examples": float(len(s.rows)), "seconds": float(result.seconds),
                                   "round": float(server_round), "lr": this_round.lr}


app = ClientApp()


@app.train()
def train_round(msg: Message, context: Context) -> Message:
    """Flower's train message -> one local round -> the reply (trainable arrays + metrics)."""
    path = federation_path(context)
    partition = int(context.node_config.get("partition-id", 0))
    s = silo(path, partition, str(context.node_config.get("data-path", "")))
    received = msg.content["arrays"]
    config = msg.content["config"]
    server_round = int(config.get("server-round", 1))
    tensors, metrics = local_round(s, received.to_torch_state_dict(), server_round,
                                   float(config.get("proximal-mu", 0.0)))
    arrays = ArrayRecord(tensors)
    dp = s.task.cfg.dp_noise > 0  # DP averages with equal weights (the accounted mechanism)
    metrics.update({"weight": 1.0 if dp else float(len(s.rows)), "partition-id": float(partition),
                    "bytes-down": float(received.count_bytes()), "bytes-up": float(arrays.count_bytes())})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)
