"""Run-folder plumbing shared by the fine-tuning commands: start or resume, device, the weights to export."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from genforge.artifacts import begin_output, check_resume_folder
from genforge.errors import ConfigError
from genforge.finetune.config import FinetuneConfig
from genforge.models.load import max_positions
from genforge.train.config import TrainConfig
from genforge.train.engine import checkpoint_exists


def prepare_output(cfg: TrainConfig, started_by: str | None = None, stage: str = "finetune") -> float:
    """Start (or, with --resume, continue) the run folder; refuse to silently mix with an unfinished run.

    A finished run in the folder is redone from scratch: its checkpoints and logs go with it. A run has
    started once it wrote a checkpoint or, for a command with work of its own before training (classify's
    copies and teacher logits, kept for --resume), the file `started_by` (under logs/) it writes first.
    `stage` is the manifest stage the command writes (compress runs here too): only a finished artifact of
    that stage is redone, another's is refused (see `begin_output`).
    """
    begun = checkpoint_exists(cfg.out) or (started_by is not None and (cfg.out / started_by).is_file())
    check_resume_folder(cfg.out, resume=cfg.resume, started=begun, marker="checkpoints/latest")
    redo = not cfg.resume and begun
    started = begin_output(cfg.out, stage)
    if redo:
        shutil.rmtree(cfg.out / "checkpoints", ignore_errors=True)
        shutil.rmtree(cfg.out / "logs", ignore_errors=True)
    return started


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runs_on(folder: Path, preferred: torch.device | None = None) -> torch.device:
    """Where the model saved in `folder` runs: `preferred` (default `device()`), except the CPU for a quantised
    or ONNX one (genforge compress), whose kernels (QLinear, ONNX Runtime) exist for the CPU only."""
    from genforge.compress.load import read_compression

    loader = (read_compression(folder) or {}).get("loader")
    return torch.device("cpu") if loader in ("quantized", "onnx") else preferred or device()


def best_checkpoint(out: Path) -> Path:
    """checkpoints/best (lowest validation loss) if an evaluation wrote it, else checkpoints/latest."""
    best = Path(out) / "checkpoints" / "best"
    return best if (best / "model.safetensors").is_file() else Path(out) / "checkpoints" / "latest"


def check_seq_len(cfg: FinetuneConfig, model_config: dict) -> None:
    """Refuse --seq-len beyond the model's positions (an index error deep in the forward otherwise)."""
    limit = max_positions(model_config)
    if limit and cfg.seq_len > limit:
        raise ConfigError(f"--seq-len {cfg.seq_len} is longer than the {limit} positions of model {cfg.model}; "
                          f"use --seq-len {limit} or less")
