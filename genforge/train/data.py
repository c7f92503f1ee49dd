"""Batches of token windows from the packed .bin files of `genforge data pack`, nanoGPT style.

Training windows are drawn at random positions of a `np.memmap`, from a generator seeded by
(seed, step): the batch of a step is a pure function of the step number. That makes the data
position trivially part of a checkpoint (it *is* the step), a resumed run sees exactly the batches
an uninterrupted one would, and under DDP each process simply takes its own micro-batches of the
same global batch, so the union of all ranks' batches is the single-process batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.artifacts import read_manifest
from genforge.errors import DataError
from genforge.train.objectives import IGNORE

MakeBatch = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]
PACK_KEYS = ("dtype", "vocab_size", "eos_id", "train_tokens", "val_tokens", "train_bytes", "val_bytes")


def mix_seed(*parts: int | str) -> int:
    """A well-spread 63-bit seed from several parts, so (seed, step) and (seed, step + 1) are unrelated."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def read_pack(data_dir: Path) -> dict[str, Any]:
    """The pack.json manifest of a packed data folder, after checking the token files it promises."""
    data_dir = Path(data_dir)
    prepared = (data_dir / "manifest.json").is_file() and read_manifest(data_dir).get("stage") == "data.prepare"
    if prepared and not (data_dir / "pack.json").is_file():
        raise DataError(f"{data_dir} is prepared but not packed: run `genforge data pack --data {data_dir} "
                        "--tokenizer TOK` first")
    manifest = read_manifest(data_dir, "data.pack", filename="pack.json")
    missing = [k for k in PACK_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{data_dir}/pack.json lacks '{missing[0]}': repack the folder with `genforge data pack`")
    if manifest["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"{data_dir}/pack.json has dtype {manifest['dtype']!r}; expected uint16 or uint32")
    for split in ("train", "val"):
        path = data_dir / f"{split}.bin"
        if not path.is_file():
            raise DataError(f"{path} is missing: repack the folder with `genforge data pack`")
        n = path.stat().st_size // np.dtype(manifest["dtype"]).itemsize
        if n != manifest[f"{split}_tokens"]:
            raise DataError(f"{path} holds {n} tokens but pack.json says {manifest[f'{split}_tokens']}: "
                            "the folder was changed after packing; repack it")
    if not (data_dir / "tokenizer").is_dir():
        raise DataError(f"{data_dir}/tokenizer is missing: repack the folder with `genforge data pack`")
    return manifest


def open_tokens(path: Path, dtype: str, window: int) -> np.ndarray:
    """A read-only memmap of a token file, refusing one too short for a single window. The length is checked
    before mapping: numpy cannot map an empty file (the val.bin of data prepared with --val-fraction 0)."""
    count = path.stat().st_size // np.dtype(dtype).itemsize
    if count == 0:
        raise DataError(f"{path} holds no tokens (`data prepare --val-fraction 0` leaves val empty): prepare and "
                        "pack the data again so that both splits hold text")
    if count < window:
        raise DataError(f"{path} has {count} tokens, fewer than one window of {window}: lower --seq-len or add data")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")


def gather(tokens: np.ndarray, starts: torch.Tensor, window: int) -> torch.Tensor:
    """Rows tokens[s : s + window] for each start, as int64 (what embedding layers take)."""
    index = starts.numpy()[:, None] + np.arange(window)[None, :]
    return torch.from_numpy(tokens[index].astype(np.int64))


@dataclass
class WindowBatches:
    """Random windows of a token file; `batch(step, micro)` is the micro-th micro-batch of a step.

    All `micro_batches` micro-batches of a step come from one draw of `micro_batches * batch_size`
    start positions, so which process computes which micro-batch does not change the global batch.
    """

    tokens: np.ndarray
    window: int
    batch_size: int
    micro_batches: int
    seed: int
    make_batch: MakeBatch

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, "windows", step))
        starts = torch.randint(0, len(self.tokens) - self.window + 1, (self.micro_batches * self.batch_size,),
                               generator=g)
        rows = gather(self.tokens, starts[micro * self.batch_size:(micro + 1) * self.batch_size], self.window)
        return self.make_batch(rows, torch.Generator().manual_seed(mix_seed(self.seed, "batch", step, micro)))

    def state_dict(self, step: int) -> dict[str, Any]:
        """The data position after `step` steps, as stored in a checkpoint (plain ints only)."""
        return {"next_step": step, "seed": self.seed, "tokens": len(self.tokens), "window": self.window,
                "sequences_seen": step * self.micro_batches * self.batch_size}


def eval_batches(tokens: np.ndarray, window: int, stride: int, batch_size: int, make_batch: MakeBatch,
                 max_batches: int = 0, seed: int = 0, rank: int = 0, world: int = 1
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive windows (start 0, stride `stride`) in batches; batch i goes to process i % world.

    With stride = window - 1 for causal LM every token after the first is predicted exactly once, so
    the mean loss over all batches is the per-token NLL of the split; `max_batches` takes windows
    evenly spread over the split instead of its beginning. Masks (mlm) are seeded per batch, so every
    evaluation scores the same positions. Every batch is scored whatever the number of processes (the
    score must not depend on it); as FSDP forwards are collectives, which a process without a batch would
    leave the others waiting in, a process short of one gets a padding batch instead: real windows, all
    labels -100, which `evaluate_loss` runs (the collective) but adds nothing for.
    """
    starts = torch.arange(0, len(tokens) - window + 1, stride)
    if max_batches and max_batches * batch_size < len(starts):  # a sample spread over the whole split
        starts = starts[torch.linspace(0, len(starts) - 1, max_batches * batch_size).round().long()]
    n_batches = -(-len(starts) // batch_size)
    if world > 1 and n_batches < world:  # fewer windows per batch, so that every process has real work
        batch_size = -(-len(starts) // world)
        n_batches = -(-len(starts) // batch_size)
    padded = -(-n_batches // world) * world  # as many on every process: batches n_batches.. are padding
    for i in range(rank, padded, world):
        real = i < n_batches
        rows = gather(tokens, starts[i * batch_size:(i + 1) * batch_size] if real else starts[:batch_size], window)
        batch = make_batch(rows, torch.Generator().manual_seed(mix_seed(seed, "eval", i)))
        yield batch if real else {**batch, "labels": torch.full_like(batch["labels"], IGNORE)}
