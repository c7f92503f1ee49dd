"""The training side of compression: the task a model is trained on during distillation or recovery.

Both run the one engine (`genforge.train.engine.train`) with the same data code the training stages
use: token windows of a packed data folder for language models (as `pretrain`), labelled texts for
classifiers (as `finetune classify`, hash split for validation). `TaskData` bundles the task's own
objective, the batches, validation and the checkpoint selection, so pruning recovery trains with
`task.objective` and distillation wraps the same objective in a `DistillObjective`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genforge.compress.config import CompressConfig
from genforge.compress.subject import Subject
from genforge.errors import DataError


@dataclass
class TaskData:
    objective: Any  # the task's own loss: ClmObjective, MlmObjective or ClassifyObjective
    batches: Any  # the engine's training batches
    eval_data: Callable[[], Iterable[dict[str, torch.Tensor]]] | None
    make_score: Callable[[nn.Module], Callable[[], dict[str, float]]] | None  # classifier metrics of a model
    select: str  # the validation metric that picks checkpoints/best
    tokens_per_byte: float | None
    examples: int  # training examples (texts) or tokens

    def calibration(self, batches: int) -> list[dict[str, torch.Tensor]]:
        """The first training batches: the inputs Wanda-style importance measures activations on."""
        return [self.batches.batch(step, 0) for step in range(batches)]


def lm_objective(subject: Subject, data: Path, seq_len: int, model_name: Path | str) -> tuple[dict[str, Any], Any, int]:
    """(pack.json, objective, sequence length) for an LM on a packed data folder: the model's own objective
    (causal, or masked with the folder's tokenizer's special ids), at most its position limit."""
    from genforge.data.pack import packed_tokenizer
    from genforge.models.load import max_positions
    from genforge.train.data import read_pack
    from genforge.train.objectives import ClmObjective, MlmObjective
    from genforge.train.pretrain import check_vocab, special_token_ids

    pack = read_pack(data)
    check_vocab(subject.model.config.vocab_size, pack, model_name)
    seq_len = min(seq_len, max_positions(subject.model.config) or seq_len)
    if subject.kind == "clm":
        return pack, ClmObjective(), seq_len
    tokenizer = packed_tokenizer(data)
    ids = special_token_ids(tokenizer, need_mask=True, where=data / "tokenizer")
    return pack, MlmObjective(mask_id=ids["mask"], vocab_size=pack["vocab_size"],
                              special_ids=sorted(set(tokenizer.all_special_ids))), seq_len


def lm_task(cfg: CompressConfig, subject: Subject, data: Path) -> TaskData:
    """Token windows of a packed data folder: causal LM (next token) or masked LM objective."""
    from genforge.train.data import WindowBatches, eval_batches, open_tokens

    pack, objective, seq_len = lm_objective(subject, data, cfg.seq_len, cfg.model)
    window = objective.window_len(seq_len)
    train_tokens = open_tokens(data / "train.bin", pack["dtype"], window)
    val_tokens = open_tokens(data / "val.bin", pack["dtype"], window)
    batches = WindowBatches(train_tokens, window, cfg.batch_size, cfg.grad_accum, cfg.seed, objective.make_batch)

    def eval_data() -> Iterable[dict[str, torch.Tensor]]:
        return eval_batches(val_tokens, window, seq_len, cfg.batch_size, objective.make_batch,
                            max_batches=cfg.eval_batches, seed=cfg.seed)

    return TaskData(objective, batches, eval_data, None, "loss", pack["val_tokens"] / max(1, pack["val_bytes"]),
                    len(train_tokens))


def read_examples(cfg: CompressConfig, info: dict[str, Any], path: Path) -> list[tuple[str, list[str]]]:
    """Labelled examples of a file, refusing labels the classifier does not have."""
    from genforge.finetune.data import read_labelled

    examples = read_labelled(path, cfg.text_field, cfg.label_field, info["multi_label"])
    unknown = {lab for _, labs in examples for lab in labs} - set(info["labels"])
    if unknown:
        raise DataError(f"{path}: labels the classifier does not know: {sorted(unknown)[:5]} "
                        f"(it knows {', '.join(info['labels'])})")
    return examples


def classifier_task(cfg: CompressConfig, subject: Subject, data: Path) -> TaskData:
    """Labelled texts: train on hash buckets 0-7 and 9, validate on bucket 8 (as `finetune classify`)."""
    from genforge.finetune.batches import ShuffledBatches, in_order
    from genforge.finetune.classify import ClassifyObjective, encode_targets, make_collate, make_scorer
    from genforge.finetune.data import hash_split

    info, tokenizer = subject.info, subject.tokenizer
    train_set, val_set = hash_split(read_examples(cfg, info, data))

    def encode(examples: list) -> tuple[list[list[int]], torch.Tensor]:
        ids = tokenizer([t for t, _ in examples], truncation=True, max_length=info["seq_len"])["input_ids"]
        return [row or [tokenizer.pad_token_id] for row in ids], encode_targets(examples, info["labels"],
                                                                               info["multi_label"])

    train_ids, train_targets = encode(train_set)
    val_ids, val_targets = encode(val_set)
    objective = ClassifyObjective(info["multi_label"])
    batches = ShuffledBatches(len(train_set), cfg.batch_size, cfg.grad_accum, cfg.seed,
                              make_collate(train_ids, train_targets, tokenizer.pad_token_id))
    val_batches = functools.partial(in_order, len(val_set), cfg.batch_size,
                                    make_collate(val_ids, val_targets, tokenizer.pad_token_id), cfg.eval_batches)
    return TaskData(objective, batches, None, lambda model: make_scorer(model, objective, val_batches, info["labels"]),
                    "macro_f1", None, len(train_set))


def task_for(cfg: CompressConfig, subject: Subject, data: Path) -> TaskData:
    return classifier_task(cfg, subject, data) if subject.kind == "classifier" else lm_task(cfg, subject, data)


def steps_config(cfg: CompressConfig, task: TaskData) -> CompressConfig:
    """`--epochs` turned into optimizer steps for classifier data (language models count steps)."""
    from genforge.finetune.batches import steps_for

    if cfg.epochs and task.make_score is not None:
        return dataclasses.replace(cfg, max_steps=steps_for(cfg.epochs, task.examples, cfg.batch_size, cfg.grad_accum))
    return cfg


def run_training(model: nn.Module, objective: Any, task: TaskData, cfg: CompressConfig, run_dir: Path,
                 score_model: nn.Module | None = None) -> dict[str, Any]:
    """Train `model` with the engine; load checkpoints/best back into it; return the run's metrics.

    `score_model` is the module the classifier metrics are computed on (the student inside a wrapper).
    """
    from genforge.finetune.model import load_weights
    from genforge.finetune.run import best_checkpoint, device
    from genforge.train.distributed import Dist
    from genforge.train.engine import train
    from genforge.train.logs import plot_loss

    cfg = steps_config(cfg, task)
    scored = score_model or model
    score = None
    if task.make_score is not None:
        score = task.make_score(scored)
    elif objective is not task.objective:  # distillation: select by the student's own loss, not the mixed one
        score = functools.partial(lm_score, scored, task)
    result = train(model, objective, task.batches, cfg, run_dir, eval_data=None if score else task.eval_data,
                   score=score, select=task.select, tokens_per_byte=task.tokens_per_byte, dist=Dist(device=device()))
    load_weights(model, best_checkpoint(run_dir))
    model.to("cpu").eval()
    plot_loss(Path(run_dir) / "logs")
    return {"steps": result.steps, "best_step": result.best_step, "train_seconds": round(result.seconds, 2),
            "stop_reason": result.stop_reason, "best": result.best}


def lm_score(model: nn.Module, task: TaskData) -> dict[str, float]:
    """The task loss (and perplexity, bits per byte) of `model` on the validation windows."""
    import math

    from genforge.train.evaluate import evaluate_loss

    result = evaluate_loss(model, task.objective, task.eval_data(), device=next(model.parameters()).device)
    metrics = {"loss": result["loss"], "perplexity": result["perplexity"]}
    if task.tokens_per_byte:
        metrics["bits_per_byte"] = result["loss"] / math.log(2) * task.tokens_per_byte
    return metrics
