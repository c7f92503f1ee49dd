"""Batches of examples for the engine: `batch(step, micro)` is a pure function of the step number.

Example i of the run (counting micro-batches of all steps in order) is position i % n of epoch
i // n, and each epoch is a permutation seeded by (seed, epoch). So a resumed run sees exactly the
batches an uninterrupted one would, with no data state in the checkpoint beyond the step. Each batch
is padded to its own longest row (dynamic padding), not to --seq-len.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from genforge.train.data import mix_seed

Collate = Callable[[list[int]], dict[str, torch.Tensor]]
C = TypeVar("C")


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad integer rows to the longest one: [len(rows), longest] int64."""
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(mix_seed(seed, "epoch", epoch))
    return torch.randperm(n, generator=g).tolist()


@dataclass
class ShuffledBatches:
    """Micro-batches of `batch_size` example indices, shuffled per epoch, turned into tensors by `collate`."""

    n: int
    batch_size: int
    micro_batches: int
    seed: int
    collate: Collate

    def indices(self, step: int, micro: int) -> list[int]:
        first = (step * self.micro_batches + micro) * self.batch_size
        return [_permutation(self.n, self.seed, i // self.n)[i % self.n] for i in range(first, first + self.batch_size)]

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        return self.collate(self.indices(step, micro))

    def state_dict(self, step: int) -> dict[str, Any]:
        seen = step * self.micro_batches * self.batch_size
        return {"next_step": step, "seed": self.seed, "examples": self.n, "examples_seen": seen,
                "epochs_seen": seen / self.n}


def in_order(n: int, batch_size: int, collate: Collate, max_batches: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Validation batches: all n examples in order (or the first `max_batches` batches)."""
    for b, first in enumerate(range(0, n, batch_size)):
        if max_batches and b >= max_batches:
            return
        yield collate(list(range(first, min(first + batch_size, n))))


def fit_batch_size(cfg: C, n: int) -> C:
    """`cfg` with --batch-size cut to the n training examples, with a note when it is: a bigger batch only
    repeats examples (`ShuffledBatches` wraps around the epoch) while its tensors grow with the flag, so
    --batch-size 100000 on 24 pairs would fill the memory."""
    if cfg.batch_size <= n:
        return cfg
    print(f"note: --batch-size {cfg.batch_size} is more than the {n} training examples; using {n}", file=sys.stderr)
    return dataclasses.replace(cfg, batch_size=n)


def steps_for(epochs: float, n: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps for `epochs` passes over n examples at batch_size x grad_accum per step (>= 1)."""
    return max(1, round(epochs * n / (batch_size * grad_accum)))
