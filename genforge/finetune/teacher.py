"""`finetune classify --teacher DIR`: learn from another classifier's probabilities (Hinton et al. 2015).

A big classifier (or several, whose probabilities are averaged: an ensemble) is often more accurate
than anything fast enough to serve. Its soft labels carry what it learnt about how classes resemble
each other, which a small student learns from better than from the gold labels alone. The teacher may
be any genforge classifier with the same labels — another architecture with its own tokenizer
included — because it is run once, before training, over the training texts (augmented copies too):
the student's loss then needs no teacher forward per step, only the stored logits (stored in the run
folder too, so that `--resume` does not run the teacher again: see `genforge.finetune.prepared`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genforge.artifacts import MANIFEST, read_manifest
from genforge.errors import DataError

EPS = 1e-6  # keeps logit(p) finite for a teacher that is certain: float32 probabilities cannot tell 1 - p below it
TINY = float(np.finfo(np.float32).tiny)  # keeps log(p) finite for a probability float32 rounded to 0


def check_teachers(teachers: list[Path], labels: list[str], multi_label: bool) -> None:
    """Refuse a teacher that predicts other labels, from its classifier.json alone: cheap enough for
    `classify` to check before it touches its run folder, and before any (possibly big) model is loaded."""
    from genforge.finetune.classifier import read_info

    for folder in teachers:
        info = read_info(folder)
        if sorted(info["labels"]) != sorted(labels) or info["multi_label"] != multi_label:
            raise DataError(f"teacher {folder} predicts {info['labels']}{' (multi-label)' * info['multi_label']}, "
                            f"the data has {labels}{' (multi-label)' * multi_label}: a teacher needs the same labels")


def teacher_logits(teachers: list[Path], texts: list[str], labels: list[str], multi_label: bool,
                   batch_size: int) -> torch.Tensor:
    """[len(texts), labels] logits of the teachers' mean probabilities, columns in the order of `labels`.

    Single-label: log-probabilities (logits up to a constant per row, which softmax ignores);
    multi-label: per-label log-odds.
    """
    from tqdm.auto import tqdm

    from genforge.finetune.classifier import load_classifier, predict_probs
    from genforge.finetune.run import runs_on

    check_teachers(teachers, labels, multi_label)
    probs = []
    for folder in teachers:
        model, tokenizer, info = load_classifier(folder)
        with tqdm(total=len(texts), desc=f"teacher {Path(folder).name}", unit="text", leave=False) as bar:
            found = predict_probs(model.to(runs_on(folder)), tokenizer, texts, seq_len=info["seq_len"],
                                  multi_label=multi_label, batch_size=batch_size, progress=bar.update)
        probs.append(found[:, [info["labels"].index(label) for label in labels]])
        del model
    return mean_logits(probs, multi_label)


def mean_logits(probs: list[np.ndarray], multi_label: bool) -> torch.Tensor:
    """Logits of the mean of several teachers' probabilities: log-probabilities (single-label), log-odds
    (multi-label).

    Single-label log-probabilities are floored at TINY only: the small probabilities are what the student
    learns from a teacher (their ratios, softened by T), and a floor as high as EPS raised a certain
    teacher's (e^-20 ~ 2e-9 per class) to 1e-6, so at T = 2 the 76 other classes of a 77-class teacher
    carried 7% of the target instead of 0.3%, spread evenly.
    """
    mean = torch.from_numpy(np.mean(np.stack(probs), axis=0, dtype=np.float64))
    if multi_label:
        return torch.logit(mean.clamp(EPS, 1 - EPS)).float()
    return mean.clamp(min=TINY).log().float()


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, multi_label: bool, temperature: float) -> torch.Tensor:
    """Distance of the student's softened distribution from the teacher's, times T^2 (Hinton et al.: keeps
    its gradients the size of the cross-entropy's as T changes)."""
    t = temperature
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(teacher / t)) * t * t
    return F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                    reduction="batchmean") * t * t


def teacher_record(folder: Path) -> dict:
    """A teacher's entry in the student's lineage: its folder and, for a genforge run, when it was made and
    what it scored."""
    if not (Path(folder) / MANIFEST).is_file():
        return {"path": str(folder)}
    manifest = read_manifest(folder)
    return {"path": str(folder), "created": manifest.get("created"), "metrics": manifest.get("metrics", {})}
