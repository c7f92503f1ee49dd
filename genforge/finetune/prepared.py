"""What `finetune classify` prepares before training, kept in its run folder so that `--resume` reuses it.

Attacked copies (`--augment-attack` with `--augment-model`: the greedy attack per training text) and a
teacher's probabilities (`--teacher`: one forward of a possibly big model per text) can take longer than
the training itself. So once the folder is started, `logs/prepared.json` records what they depend on; the
copies go to `logs/augmented.partial.jsonl` job by job as they are made, then to `logs/augmented.jsonl`
(atomically, the partial file removed), and the teacher's logits to `logs/teacher_logits.safetensors`.
A run killed anywhere after that (making copies, while the teacher labels, or training) continues with
`--resume` from what it had finished, and trains on exactly the examples and targets an uninterrupted run
would: copies are deterministic per seed, and the stored ones are read back in their order. A resume with
settings that would change them is refused, naming the first difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genforge.adversarial.attacks import Recipe
from genforge.adversarial.augment import Example, augment_examples
from genforge.adversarial.neighbours import default_encoder
from genforge.artifacts import (
    atomic_write_bytes,
    check_same_settings,
    model_sha256,
    read_json,
    reading,
    sha256_file,
    write_json,
    write_jsonl,
)
from genforge.errors import ArtifactError
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.data import parse_labels
from genforge.finetune.teacher import teacher_logits

PREPARED = "logs/prepared.json"  # written first: with it, a folder holds a started run even before a checkpoint
PARTIAL = "logs/augmented.partial.jsonl"
AUGMENTED = "logs/augmented.jsonl"
TEACHER = "logs/teacher_logits.safetensors"
REDO = "delete it to make it again on --resume, or choose another --out"
# the settings that are files or folders, compared by hash, and the flags that name them
FILES = {"teacher_sha256": "--teacher", "data_sha256": "--data", "val_data_sha256": "--val-data",
         "augment_model_sha256": "--augment-model"}


def settings(cfg: ClassifyConfig) -> dict[str, Any]:
    """What the copies and teacher targets depend on (the switches first; the rest only where they are on).
    --batch-size is left out: it changes the teacher's speed, not its probabilities."""
    found: dict[str, Any] = {"augment_attack": cfg.augment_attack,
                             "teacher_sha256": [model_sha256(t) for t in cfg.teacher]}
    if cfg.augment_attack or cfg.teacher:
        found |= {"data_sha256": sha256_file(cfg.data),
                  "val_data_sha256": sha256_file(cfg.val_data) if cfg.val_data else None,
                  "text_field": cfg.text_field, "label_field": cfg.label_field, "multi_label": cfg.multi_label,
                  "label_sep": cfg.label_sep}
    if cfg.augment_attack:
        encoder = default_encoder()
        found |= {"augment_ratio": cfg.augment_ratio, "augment_random_ratio": cfg.augment_random_ratio,
                  "augment_model_sha256": model_sha256(cfg.augment_model) if cfg.augment_model else None,
                  "seed": cfg.seed, "model": str(Path(cfg.model).resolve()),
                  "encoder": str(encoder) if encoder else None}
    return json.loads(json.dumps(found))  # as read back from the file: lists, not tuples


def check(cfg: ClassifyConfig) -> dict[str, Any]:
    """The preparation's settings, on --resume checked against the interrupted run's record. Reads only, so
    `classify` calls it before it touches the folder: a refused resume leaves a finished run whole."""
    current, path = settings(cfg), cfg.out / PREPARED
    if cfg.resume and path.is_file():
        remedy = "delete it and run again to make the copies and teacher logits anew, or choose another --out"
        files = {}
        for key, flag in FILES.items():
            value = getattr(cfg, flag[2:].replace("-", "_"))
            files[key] = f"{flag} {', '.join(map(str, value)) if isinstance(value, list) else value or ''}".strip()
        check_same_settings(read_json(path, remedy, kind=dict), current, files)
    return current


def begin(cfg: ClassifyConfig, current: dict[str, Any]) -> bool:
    """Start the preparation (right after `prepare_output`, with `check`'s settings); True when the folder's
    earlier preparation is reused: on --resume of a run that recorded its settings. A new run, or a resumed
    one from before such records, drops whatever an earlier run left and records its own."""
    if cfg.resume and (cfg.out / PREPARED).is_file():
        return True
    for name in (PARTIAL, AUGMENTED, TEACHER):
        (cfg.out / name).unlink(missing_ok=True)
    write_json(cfg.out / PREPARED, current)
    return False


def copies(cfg: ClassifyConfig, examples: list[Example], recipes: list[Recipe], reuse: bool) -> list[Example]:
    """The attacked copies of `examples` in the order `augment_examples` makes them: read back when a resumed
    run finished them; else made, going on from the progress file, and saved (also for a person to read)."""
    if not cfg.augment_attack:
        return []
    path = cfg.out / AUGMENTED
    if reuse and path.is_file():
        (cfg.out / PARTIAL).unlink(missing_ok=True)  # a kill between saving the copies and removing it
        with reading(path, REDO), open(path, encoding="utf-8") as f:
            return [(row[cfg.text_field], parse_labels(row[cfg.label_field], cfg.multi_label, cfg.label_sep))
                    for row in map(json.loads, f)]
    made = augment_examples(examples, cfg, progress=cfg.out / PARTIAL, recipes=recipes)[len(examples):]
    write_jsonl(path, ({cfg.text_field: text, cfg.label_field: cfg.label_sep.join(labs)} for text, labs in made))
    (cfg.out / PARTIAL).unlink()
    return made


def teacher(cfg: ClassifyConfig, texts: list[str], labels: list[str], reuse: bool) -> torch.Tensor | None:
    """The teachers' logits for `texts` (see `teacher_logits`): read back when a resumed run computed them,
    else computed and saved."""
    from safetensors import SafetensorError
    from safetensors.torch import load, save

    if not cfg.teacher:
        return None
    path = cfg.out / TEACHER
    if reuse and path.is_file():
        with reading(path, REDO, also=(SafetensorError,)):
            logits = load(path.read_bytes())["logits"]
        if tuple(logits.shape) != (len(texts), len(labels)):
            raise ArtifactError(f"{path} holds {tuple(logits.shape)} logits for {len(texts)} texts and "
                                f"{len(labels)} labels: {REDO}")
        return logits
    logits = teacher_logits(cfg.teacher, texts, labels, cfg.multi_label, cfg.batch_size)
    atomic_write_bytes(path, save({"logits": logits.contiguous()}))
    return logits
