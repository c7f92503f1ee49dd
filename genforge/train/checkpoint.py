"""Checkpoints: model weights as safetensors, the rest of the training state weights-only-loadable.

A checkpoint is a folder written under a temporary name and renamed into place, so a kill mid-write
never leaves a half checkpoint under the real name. The model part is a standard HF folder
(config.json + model.safetensors), loadable on its own; trainer_state.pt holds the optimizer, RNG
states (as tensors), step, data position and early-stopping state: only tensors, numbers, strings,
lists and dicts, so `torch.load(..., weights_only=True)` reads it without trusting pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model

from genforge.errors import ArtifactError
from genforge.models.load import hf_bars_off, load_state, reading_weights

STATE = "trainer_state.pt"
WEIGHTS = "model.safetensors"


def rng_state() -> dict[str, Any]:
    """The CPU generator's state and, on a GPU, the current device's (the one this process trains on).

    Only the main process saves it, and every process restores it: all of them seed alike and draw alike
    (same model, same batch shapes), so their generators agree and the main process's state is theirs too.
    One device's state, not every visible device's, so a run resumes with fewer GPUs visible than it had."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng(state["cuda"]))


def cuda_rng(saved: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The CUDA generator state to restore on this process's device. Checkpoints from before one device's state
    was saved hold a list, one per device the main process saw; it trained on the first."""
    return saved[0] if isinstance(saved, list) else saved


def save_weights(model: Any, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """An HF model as an HF folder; any other module as a bare model.safetensors.

    `state_dict` replaces the model's own tensors (the gathered full weights of an FSDP-sharded model).
    """
    if hasattr(model, "save_pretrained"):
        with hf_bars_off():
            model.save_pretrained(folder, state_dict=state_dict)
    elif state_dict is not None:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / WEIGHTS))
    else:
        save_model(model, str(folder / WEIGHTS))


def save_checkpoint(folder: Path, model: Any, state: dict[str, Any] | None = None,
                    model_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights (+ trainer state) into `folder` atomically: temp folder, then rename over the old one."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_weights(model, tmp, model_state)
        if state is not None:
            torch.save(state, tmp / STATE)
            summary = {k: v for k, v in state.items() if isinstance(v, int | float | str)}
            (tmp / "checkpoint.json").write_text(json.dumps(summary, indent=2) + "\n")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        # what killed saves left under other process ids: half-written temp folders, and old checkpoints
        # this one supersedes (each as large as the model; find_checkpoint must not pick a stale one)
        for leftover in [*folder.parent.glob(f".{folder.name}.tmp-*"), *folder.parent.glob(f".{folder.name}.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path) -> Path | None:
    """`folder` if it holds a complete checkpoint; else the previous one a crash left mid-rename."""
    folder = Path(folder)
    if (folder / STATE).is_file():
        return folder
    with contextlib.suppress(FileNotFoundError):
        for old in sorted(folder.parent.glob(f".{folder.name}.old-*")):
            if (old / STATE).is_file():
                return old
    return None


def load_checkpoint(folder: Path, model: Any) -> dict[str, Any]:
    """Load weights into `model` (tied weights handled); return the trainer state (optimizer state inside)."""
    found = find_checkpoint(folder)
    if found is None:
        raise ArtifactError(f"no checkpoint to resume in {folder}: run without --resume to start fresh")
    try:
        state = torch.load(found / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
        raise ArtifactError(f"checkpoint {found / STATE} cannot be read: {str(e).splitlines()[0]}") from None
    with reading_weights(found / WEIGHTS):
        tensors = load_file(found / WEIGHTS)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    changed = sorted(k for k, t in tensors.items() if k in shapes and shapes[k] != t.shape)
    if changed:  # load_state_dict would raise a RuntimeError listing every mismatch
        raise ArtifactError(f"checkpoint {found} does not fit the model: {changed[0]} is {tuple(tensors[changed[0]].shape)}"
                            f" there, {tuple(shapes[changed[0]])} here ({len(changed)} tensors differ); resume with "
                            "the run's own sizes (its config.yaml)")
    load_state(model, tensors, f"checkpoint {found}")
    return state
