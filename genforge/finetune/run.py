"""Run-folder plumbing shared by the fine-tuning commands: start or resume, device, the weights to export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from genforge.artifacts import (
    begin_output,
    check_output,
    check_resume_folder,
    check_same_settings,
    input_file,
    read_json,
    sha256_file,
    write_json,
)
from genforge.errors import ConfigError
from genforge.finetune.config import FinetuneConfig
from genforge.models.load import max_positions
from genforge.train.config import TrainConfig
from genforge.train.engine import checkpoint_exists

RUN_INPUTS = "logs/inputs.json"
# What a fine-tuning run's examples and model are (beside --model and the data files): the engine lets a
# --resume change steps, lr and evaluation flags, but a change of these would continue one run's checkpoint
# on another run's examples or model, and the manifest would name the new inputs alone.
IDENTITY = ("text_field", "label_field", "multi_label", "label_sep", "head", "system", "train_on_prompt", "pack",
            "lora_r", "lora_alpha", "lora_targets")
INPUT_FILES = {"data_sha256": "--data", "val_data_sha256": "--val-data"}


def run_inputs(cfg: FinetuneConfig) -> dict[str, Any]:
    """The inputs a resumed fine-tuning run must share with the interrupted one (see IDENTITY)."""
    found = {"model": str(Path(cfg.model).resolve()), "data_sha256": sha256_file(input_file(cfg.data, "data file")),
             "val_data_sha256": sha256_file(input_file(cfg.val_data, "data file")) if cfg.val_data else None}
    found |= {key: getattr(cfg, key) for key in IDENTITY if hasattr(cfg, key)}
    return json.loads(json.dumps(found))  # as read back from the file: lists, not tuples


def check_run_folder(cfg: TrainConfig, started_by: str | None = None, inputs: dict[str, Any] | None = None,
                     stage: str = "finetune") -> bool:
    """Refuse, reading only, an output folder the run cannot use: another stage's artifact, a --resume with
    nothing to resume or with other inputs than the interrupted run's (`inputs`, see `run_inputs`), a new run
    into an unfinished one. Commands call it first, before their data are read and tokenised (minutes on real
    data); `prepare_output` again. True when the folder holds a started run (`started_by`: see there)."""
    check_output(cfg.out, stage)
    begun = checkpoint_exists(cfg.out) or (started_by is not None and (cfg.out / started_by).is_file())
    check_resume_folder(cfg.out, resume=cfg.resume, started=begun, marker="checkpoints/latest")
    record = cfg.out / RUN_INPUTS
    if inputs is not None and cfg.resume and record.is_file():
        saved = read_json(record, "delete it to resume without this check, or choose another --out", kind=dict)
        files = {key: f"{flag} {getattr(cfg, flag[2:].replace('-', '_')) or ''}".strip()
                 for key, flag in INPUT_FILES.items()}
        check_same_settings(saved, inputs, files)
    return begun


def prepare_output(cfg: TrainConfig, started_by: str | None = None, stage: str = "finetune",
                   inputs: dict[str, Any] | None = None) -> float:
    """Start (or, with --resume, continue) the run folder; refuse to silently mix with an unfinished run.

    A finished run in the folder is redone from scratch: its checkpoints and logs go with it. A run has
    started once it wrote a checkpoint or, for a command with work of its own before training (classify's
    copies and teacher logits, kept for --resume), the file `started_by` (under logs/) it writes first.
    `stage` is the manifest stage the command writes (compress runs here too): only a finished artifact of
    that stage is redone, another's is refused (see `begin_output`). `inputs` (`run_inputs`) are recorded in
    logs/inputs.json, and a --resume whose inputs differ from the recorded ones is refused, naming the first.
    """
    begun = check_run_folder(cfg, started_by, inputs, stage)  # before the folder is touched
    redo = not cfg.resume and begun
    started = begin_output(cfg.out, stage)
    if redo:
        shutil.rmtree(cfg.out / "checkpoints", ignore_errors=True)
        shutil.rmtree(cfg.out / "logs", ignore_errors=True)
    if inputs is not None:
        write_json(cfg.out / RUN_INPUTS, inputs)
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
