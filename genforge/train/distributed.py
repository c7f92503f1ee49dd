"""One process or many: the few distributed facts the training loop needs, read from torchrun's env.

`genforge pretrain ...` runs unchanged under `torchrun --nproc_per_node N` (or `accelerate launch`,
which sets the same variables): each process trains on its own micro-batches of the same global
batch, gradients are averaged by DDP (gloo on CPU, NCCL on GPU) or, with --fsdp, parameters,
gradients and optimizer state are sharded by FSDP2; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from genforge.config import usable_cpus


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1); pick the device; set threads.

    Threads: all cores split between the processes of this node, unless OMP_NUM_THREADS says otherwise
    (torch's default of one thread per core is right for one process, oversubscribed for several).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, usable_cpus() // local_world))
    if world > 1 and not tdist.is_initialized():
        # The engine's small collectives (signals, clock, loss, token counts) reduce CPU tensors: on GPUs they
        # go through gloo, the gradients through NCCL.
        tdist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    rank = tdist.get_rank() if world > 1 else 0
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world, device=device)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place sum/max over processes; a no-op in a single process."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM if op == "sum" else tdist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def close() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def shard(model: torch.nn.Module) -> None:
    """FSDP2: shard each transformer block (the classes HF lists in `_no_split_modules`), then the rest.

    A block holding a tied parameter (BERT's embeddings share the MLM decoder weight) stays in the root
    group: FSDP needs both users of a shared tensor in one group.
    """
    from torch.distributed.fsdp import fully_shard

    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    groups = [m for m in model.modules()
              if type(m).__name__ in blocks and not any(seen[id(p)] > 1 for p in m.parameters())]
    for module in groups:  # decided before sharding: fully_shard replaces the parameter objects
        fully_shard(module)
    fully_shard(model)


def parallelize(model: torch.nn.Module, dist: Dist, fsdp: bool = False) -> torch.nn.Module:
    """The module to run forward on: DDP replicas, FSDP2 shards (in place), or the model itself when alone."""
    if dist.world == 1:
        return model
    if fsdp:
        shard(model)
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dist.device] if dist.device.type == "cuda" else None)


def grad_sync(forward: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP no_sync / FSDP2 flag)."""
    if isinstance(forward, torch.nn.parallel.DistributedDataParallel) and not enabled:
        return forward.no_sync()
    if hasattr(forward, "set_requires_gradient_sync"):
        forward.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool
               ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """(model state or None = use the model as is, optimizer state keyed by parameter name).

    Keys by name (not position) make one checkpoint format for 1 process, DDP and FSDP, so a run can
    resume under another launch mode. Under FSDP this is a collective: every rank must call it, and
    only rank 0 receives the gathered tensors.
    """
    if fsdp and tdist.is_initialized():
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)
    names = _param_names(model, optimizer)
    sd = optimizer.state_dict()
    return None, {"state": {names[i]: s for i, s in sd["state"].items()},
                  "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]]}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         fsdp: bool) -> None:
    """Load a name-keyed optimizer state (from `full_state`) into a plain, DDP or FSDP-sharded model's optimizer."""
    if fsdp and tdist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))
        return
    index = {n: i for i, n in enumerate(_param_names(model, optimizer))}
    optimizer.load_state_dict({
        "state": {index[n]: s for n, s in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]})
