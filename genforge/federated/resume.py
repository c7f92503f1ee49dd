"""Resuming a federated run: the server's state after each round, and what must match to continue it.

After every round the ServerApp writes `checkpoints/federated.pt` (one file, replaced atomically): the
round, the global trainable tensors, the server optimiser's state (FedAdam/FedYogi moments, FedAvgM
momentum), how many noisy releases the DP accountant has composed, whether any round aggregated an
update, and the seconds so far. `--resume` starts the strategy from there: rounds keep their numbers (the
clients' learning rate and data order follow the round), the accountant is replayed to the same epsilon,
and `rounds.jsonl` keeps its earlier rows. A round killed midway is trained again. The file holds only
tensors, numbers and dicts, so `torch.load(weights_only=True)` reads it without trusting pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.artifacts import atomic_open, check_resume_folder, check_same_settings
from genforge.errors import ArtifactError, ConfigError

CHECKPOINT = Path("checkpoints") / "federated.pt"
# settings a resumed run may change: how long it runs and where, not what it computes
FREE_TO_CHANGE = {"out", "resume", "rounds", "round_timeout", "client_cpus", "total_cpus", "engine", "superlink",
                  "insecure"}


def server_optimizer(strategy: Any) -> Any:
    """The Flower strategy holding the optimiser state: under `Guarded` and, with DP, under its wrapper."""
    inner = strategy.strategy
    return getattr(inner, "strategy", inner)


def server_state(strategy: Any) -> dict[str, dict[str, torch.Tensor]]:
    """FedOpt's first/second moments and FedAvgM's momentum, as tensors (empty for stateless strategies)."""
    opt = server_optimizer(strategy)
    state = {}
    for key in ("m_t", "v_t"):
        if getattr(opt, key, None):
            state[key] = {k: torch.from_numpy(np.array(v)) for k, v in getattr(opt, key).items()}
    if getattr(opt, "momentum_vector", None) is not None:
        state["momentum_vector"] = {str(i): torch.from_numpy(np.array(v)) for i, v in enumerate(opt.momentum_vector)}
    return state


def restore_server(strategy: Any, saved: dict[str, Any], cfg: Any) -> None:
    """Put `server_state`'s tensors back and replay the DP accountant's releases."""
    opt = server_optimizer(strategy)
    state = saved["server"]
    for key in ("m_t", "v_t"):
        if key in state:
            setattr(opt, key, {k: v.numpy() for k, v in state[key].items()})
    if "momentum_vector" in state:
        opt.momentum_vector = [state["momentum_vector"][str(i)].numpy() for i in range(len(state["momentum_vector"]))]
    releases = int(saved["releases"])
    if releases:
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        from genforge.federated.server import sampled_clients

        strategy.strategy.accountant.compose(GaussianPrivacyEvent(
            noise_multiplier=cfg.dp_noise, sample_size=sampled_clients(cfg), population_size=cfg.clients),
            count=releases)
    strategy.aggregated_before = bool(saved["aggregated"])


def save_round(out: Path, server_round: int, tensors: dict[str, torch.Tensor], strategy: Any,
               seconds: float) -> None:
    """The state to continue from after `server_round` (see the module docstring)."""
    from genforge.federated.server import privacy_spent

    spent = privacy_spent(strategy)
    state = {"round": server_round, "tensors": {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
             "server": server_state(strategy), "releases": int(spent["releases"]) if spent else 0,
             "aggregated": strategy.aggregated_before or any(r.get("used") for r in strategy.rounds.values()),
             "seconds": float(seconds)}
    with atomic_open(Path(out) / CHECKPOINT, "wb") as f:
        torch.save(state, f)


def load_round(out: Path) -> dict[str, Any]:
    path = Path(out) / CHECKPOINT
    check_resume_folder(out, resume=True, started=path.is_file(), marker=str(CHECKPOINT))
    try:
        state = torch.load(path, weights_only=True, mmap=True)  # the launcher reads the round only
        int(state["round"]), state["tensors"].items(), state["server"].items()
    except Exception as e:  # noqa: BLE001 - any damage reads as one line
        raise ArtifactError(f"{path} is damaged ({type(e).__name__}); start again without --resume") from None
    return state


def renumbered_rounds(done: int, rounds: int) -> str:
    """The line a resumed ServerApp logs first. Flower 1.42 numbers a session's rounds from 1 and takes no start
    round (`Strategy.start` and SecAgg+'s `DefaultWorkflow` loop over `range(1, num_rounds + 1)`), so its own
    "[ROUND k/n]" lines restart while everything genforge writes counts on from the checkpoint."""
    return (f"resuming after round {done} of {rounds}: Flower counts this session's rounds from 1 again, so its "
            f"round k is round {done} + k of the run (its round 1 is round {done + 1}); rounds.jsonl, the "
            "checkpoints and the clients use the run's numbers")


def check_resume(cfg: Any, out: Path, clients: list[dict[str, Any]]) -> dict[str, Any]:
    """The stopped run's federation.json; refuses a resume whose settings or silos differ from that run's."""
    import json

    from genforge.config import to_dict

    out = Path(out)
    state = load_round(out)
    try:
        before = json.loads((out / "federation.json").read_text(encoding="utf-8"))
        old_cfg, old_clients = before["config"], before["clients"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ArtifactError(f"{out}/federation.json is missing or damaged; start again without --resume") from None
    check_same_settings({k: v for k, v in old_cfg.items() if k not in FREE_TO_CHANGE},
                        {k: v for k, v in to_dict(cfg).items() if k not in FREE_TO_CHANGE})
    for old, new in zip(old_clients, clients, strict=False):
        if old.get("data_sha256") != new.get("data_sha256"):
            raise ConfigError(f"--resume: client {new['client']}'s data ({new['data']}) changed since the run "
                              "started; choose another --out to train on the new data")
    done = int(state["round"])
    if cfg.rounds <= done:
        raise ConfigError(f"--resume: the run has already done {done} of its rounds; give --rounds above {done} "
                          "to continue it")
    return before


def check_fresh(out: Path) -> None:
    """A new run may redo a finished folder, not one whose run stopped midway (that one --resume continues)."""
    check_resume_folder(out, resume=False, started=(Path(out) / CHECKPOINT).is_file(), marker=str(CHECKPOINT))


def clear(out: Path) -> None:
    """A fresh run's start: no checkpoint of an earlier run is left to be resumed by mistake, and no TensorBoard
    file of it is left in logs/ to draw its curves over the new run's (as centralized training redoes a run)."""
    import shutil

    (Path(out) / CHECKPOINT).unlink(missing_ok=True)
    shutil.rmtree(Path(out) / "logs", ignore_errors=True)
