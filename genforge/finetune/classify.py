"""`genforge finetune classify`: labelled texts + a pretrained model -> a classifier run folder.

The loop is the engine's (`genforge.train.engine.train`); this module brings the objective
(cross-entropy, or per-label BCE for multi-label, with optional label smoothing), the batches
(tokenised once, shuffled per epoch as a pure function of the step), a validation scorer (loss,
accuracy and macro-F1 in one pass) and the export (see `genforge.finetune.classifier` for the saved
format). The engine keeps the checkpoint with the best `--select` metric (macro-F1 by default) and
stops early on it; the final report is computed on that checkpoint. Attacked copies and teacher logits,
made before training, are kept in the run folder for `--resume` (`genforge.finetune.prepared`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from genforge.adversarial.augment import augment_recipes
from genforge.adversarial.perturb import wrap_adversarial
from genforge.artifacts import MANIFEST, read_manifest, write_json, write_manifest
from genforge.errors import DataError
from genforge.finetune import prepared
from genforge.finetune.batches import ShuffledBatches, fit_batch_size, in_order, pad, steps_for
from genforge.finetune.card import write_card
from genforge.finetune.classifier import (
    CLASSIFIER_JSON,
    HEAD_WEIGHTS,
    build_classifier,
    predict_probs,
    tokenize,
)
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.data import hash_split, label_set, read_labelled
from genforge.finetune.lora import apply_lora, save_model
from genforge.finetune.metrics import plot_confusion, report
from genforge.finetune.model import freeze, is_decoder, load_tokenizer, load_weights, trainable_params
from genforge.finetune.run import (
    best_checkpoint,
    check_run_folder,
    check_seq_len,
    device,
    prepare_output,
    run_inputs,
    runs_on,
)
from genforge.finetune.teacher import check_teachers, distill_loss, teacher_record
from genforge.finetune.typos import TypoCorrector, save_vocabulary, word_counts
from genforge.models.load import fit_tokenizer, read_model_config
from genforge.train.distributed import Dist
from genforge.train.engine import checkpoint_exists, train
from genforge.train.logs import plot_loss


@dataclass
class ClassifyObjective:
    """Cross-entropy over classes (single-label) or mean BCE over labels (multi-label); on batches that carry
    a teacher's logits, mixed with the distance to the teacher by `distill_weight` (validation batches carry
    none, so the validation loss stays the gold labels' alone)."""

    multi_label: bool
    label_smoothing: float = 0.0
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    name: str = "classify"

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["input_ids"], batch["attention_mask"]).float()
        labels = batch["labels"]
        if self.multi_label:  # smoothing pulls 0/1 targets towards 1/2 by eps/2
            target = labels * (1 - self.label_smoothing) + self.label_smoothing / 2
            loss = F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if "teacher" in batch:
            kd = distill_loss(logits, batch["teacher"], self.multi_label, self.distill_temperature)
            loss = (1 - self.distill_weight) * loss + self.distill_weight * kd
        return loss, {"tokens": torch.tensor(labels.shape[0], device=labels.device), "logits": logits.detach()}


def encode_targets(examples: list[tuple[str, list[str]]], labels: list[str], multi_label: bool) -> torch.Tensor:
    index = {lab: i for i, lab in enumerate(labels)}
    if not multi_label:
        return torch.tensor([index[labs[0]] for _, labs in examples], dtype=torch.long)
    target = torch.zeros(len(examples), len(labels))
    for row, (_, labs) in enumerate(examples):
        target[row, [index[lab] for lab in labs]] = 1.0
    return target


def make_collate(ids: list[list[int]], targets: torch.Tensor, pad_id: int, teacher: torch.Tensor | None = None
                 ) -> Any:
    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        batch = {"input_ids": pad([ids[i] for i in rows], pad_id),
                 "attention_mask": pad([[1] * len(ids[i]) for i in rows], 0), "labels": targets[rows]}
        return batch if teacher is None else batch | {"teacher": teacher[rows]}

    return collate


def make_scorer(model: Any, objective: ClassifyObjective, batches: Callable[[], Iterable[dict[str, torch.Tensor]]],
                labels: list[str]) -> Callable[[], dict[str, float]]:
    """Validation loss, accuracy and macro-F1 of `model` in one pass over `batches()` (the engine's `score`)."""

    def score() -> dict[str, float]:
        device = next(model.parameters()).device
        loss_sum, n, truth, predicted = 0.0, 0, [], []
        for batch in batches():
            batch = {k: v.to(device) for k, v in batch.items()}
            loss, out = objective.loss(model, batch)
            logits = out["logits"]
            size = batch["labels"].shape[0]
            loss_sum, n = loss_sum + loss.item() * size, n + size
            truth.append(batch["labels"].cpu())
            predicted.append((logits > 0).long() if objective.multi_label else logits.argmax(-1))
        y_true, y_pred = torch.cat(truth).long().numpy(), torch.cat(predicted).cpu().numpy()
        result = report(y_true, y_pred, labels, objective.multi_label)
        return {"loss": loss_sum / n, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}

    return score


def load_data(cfg: ClassifyConfig) -> tuple[list, list, list[str]]:
    """(train examples, validation examples, sorted label set); validation from the hash split if not given."""
    examples = read_labelled(cfg.data, cfg.text_field, cfg.label_field, cfg.multi_label, cfg.label_sep)
    if cfg.val_data is not None:
        train_set = examples
        val_set = read_labelled(cfg.val_data, cfg.text_field, cfg.label_field, cfg.multi_label, cfg.label_sep)
    else:
        train_set, val_set = hash_split(examples)
    labels = label_set(train_set + val_set)
    if len(labels) < 2 and not cfg.multi_label:
        raise DataError(f"{cfg.data}: only one label ({labels[0]!r}) in '{cfg.label_field}'; "
                        "a classifier needs at least two")
    unseen = set(label_set(val_set)) - set(label_set(train_set))
    if unseen:
        raise DataError(f"validation labels never seen in training: {sorted(unseen)[:5]}")
    return train_set, val_set, labels


def classify(cfg: ClassifyConfig) -> Path:
    """Fine-tune a classifier; return the run folder. Metrics go to the manifest and logs/val_report.json."""
    base_config = read_model_config(cfg.model)
    check_seq_len(cfg, base_config)
    decoder = is_decoder(base_config)
    inputs = run_inputs(cfg)
    check_run_folder(cfg, prepared.PREPARED, inputs)  # before the data are read and tokenised: minutes
    train_set, val_set, labels = load_data(cfg)
    words = word_counts([t for t, _ in train_set]) if cfg.correct_typos else None  # the data's own, not copies'
    recipes = augment_recipes(train_set, cfg) if cfg.augment_attack else []
    check_teachers(cfg.teacher, labels, cfg.multi_label)
    preparation = prepared.check(cfg)
    tokenizer = load_tokenizer(cfg.model)

    torch.manual_seed(cfg.seed)
    model, new_modules = build_classifier(cfg.model, head=cfg.head, labels=labels, multi_label=cfg.multi_label,
                                          pad_id=tokenizer.pad_token_id, dropout=cfg.dropout)
    model.typos = TypoCorrector(words) if words is not None else None
    freeze(model.body, layers=cfg.freeze_layers, embeddings=cfg.freeze_embeddings)
    if cfg.lora_r:
        model.body = apply_lora(model.body, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                targets=cfg.lora_targets, task_type="SEQ_CLS" if cfg.head == "linear" else None,
                                new_modules=new_modules)
    params = trainable_params(model)
    # only now, with every input read and checked: a bad one leaves an earlier run whole
    started = prepare_output(cfg, started_by=prepared.PREPARED, inputs=inputs)
    # The slow preparation, kept in the folder for --resume (see genforge.finetune.prepared). Loading a
    # victim or teacher may draw random numbers (a custom head's init): forked, so that training starts from
    # the same state whether the copies and logits were made now or read back.
    with torch.random.fork_rng():
        reuse = prepared.begin(cfg, preparation)
        train_set = train_set + prepared.copies(cfg, train_set, recipes, reuse)
        cfg = fit_batch_size(cfg, len(train_set))
        teacher = prepared.teacher(cfg, [t for t, _ in train_set], labels, reuse)
    if cfg.epochs:
        cfg = dataclasses.replace(cfg, max_steps=steps_for(cfg.epochs, len(train_set), cfg.batch_size, cfg.grad_accum))

    train_ids, val_ids = (tokenize(model, tokenizer, [t for t, _ in examples], cfg.seq_len)
                          for examples in (train_set, val_set))
    train_targets = encode_targets(train_set, labels, cfg.multi_label)
    val_targets = encode_targets(val_set, labels, cfg.multi_label)
    batches = ShuffledBatches(len(train_set), cfg.batch_size, cfg.grad_accum, cfg.seed,
                              make_collate(train_ids, train_targets, tokenizer.pad_token_id, teacher))
    val_collate = make_collate(val_ids, val_targets, tokenizer.pad_token_id)
    objective = ClassifyObjective(cfg.multi_label, cfg.label_smoothing, cfg.distill_weight, cfg.distill_temperature)
    val_batches = functools.partial(in_order, len(val_set), cfg.batch_size, val_collate, cfg.eval_batches)
    # a resumed run may have stopped before its first checkpoint: then its training starts anew
    engine_cfg = dataclasses.replace(cfg, resume=cfg.resume and checkpoint_exists(cfg.out))
    result = train(model, wrap_adversarial(objective, cfg), batches, engine_cfg, cfg.out, dist=Dist(device=device()),
                   score=make_scorer(model, objective, val_batches, labels), select=cfg.select)

    load_weights(model, best_checkpoint(cfg.out))
    probs = predict_probs(model, tokenizer, [t for t, _ in val_set], seq_len=cfg.seq_len,
                          multi_label=cfg.multi_label, batch_size=cfg.batch_size)
    y_true = val_targets.numpy().astype(int)
    y_pred = (probs > 0.5).astype(int) if cfg.multi_label else probs.argmax(1)
    val = report(y_true, y_pred, labels, cfg.multi_label)
    plot_confusion(y_true, y_pred, labels, cfg.multi_label, cfg.out / "logs" / "confusion.png")
    plot_loss(cfg.out / "logs")
    write_json(cfg.out / "logs" / "val_report.json", val)

    export(cfg, model, tokenizer, labels, decoder)
    best_val = result.best or result.last or {}
    metrics = {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "val_loss": best_val.get("loss"),
               "selected_by": cfg.select,
               "best_step": result.best_step, "steps": result.steps, "train_seconds": round(result.seconds, 2),
               "stop_reason": result.stop_reason, "train_examples": len(train_set), "val_examples": len(val_set),
               "labels": len(labels), "params": params["total"], "trainable_params": params["trainable"]}
    parent = read_manifest(cfg.model) if (Path(cfg.model) / MANIFEST).is_file() else None
    extra = {"task": "classify", "labels": labels, "model": {"architecture": type(model.body).__name__,
                                                             "params": params["total"], "base_model": str(cfg.model)}}
    if cfg.teacher:
        extra["teachers"] = [teacher_record(t) for t in cfg.teacher]
    inputs = [cfg.data] + ([cfg.val_data] if cfg.val_data else [])
    write_card(cfg.out, "classify", cfg, metrics, parent, inputs, val)
    write_manifest(cfg.out, "finetune", cfg, inputs=inputs, parent=parent, metrics=metrics, started=started,
                   extra=extra)
    print_summary(cfg.out, metrics, val)
    return cfg.out


def export(cfg: ClassifyConfig, model: Any, tokenizer: Any, labels: list[str], decoder: bool) -> None:
    """The best weights as the run folder's payload (see genforge.finetune.classifier for the format)."""
    from safetensors.torch import save_file

    adapter = bool(cfg.lora_r) and not cfg.merge
    save_model(model.body, cfg.out, merge=cfg.merge)
    if model.head is not None:
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(cfg.out / HEAD_WEIGHTS),
                  metadata={"format": "pt"})
    fit_tokenizer(tokenizer, model.body.config).save_pretrained(cfg.out)
    if model.typos is not None:
        save_vocabulary(model.typos.counts, cfg.out)
    lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": cfg.lora_targets or "all-linear",
            "merged": cfg.merge} if cfg.lora_r else None
    write_json(cfg.out / CLASSIFIER_JSON, {
        "format": 1, "head": cfg.head, "labels": labels, "multi_label": cfg.multi_label, "decoder": decoder,
        "seq_len": cfg.seq_len, "text_field": cfg.text_field, "lora": lora, "adapter": adapter,
        "base_model": str(Path(cfg.model).resolve())})


def print_summary(out: Path, metrics: dict[str, Any], val: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=f"finetune classify -> {out}", show_header=False)
    for key in ("val_accuracy", "val_macro_f1", "val_loss", "best_step", "steps", "train_seconds",
                "stop_reason", "trainable_params"):
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value))
    console.print(table)
    per_class = Table(title="validation, per class")
    for col in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(col)
    for label, row in val["per_class"].items():
        per_class.add_row(label, *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")), str(row["support"]))
    console.print(per_class)


def evaluate_folder(folder: Path, examples: list[tuple[str, list[str]]], batch_size: int = 64) -> dict[str, Any]:
    """Accuracy/F1 report of a saved classifier on labelled examples (used by benchmarks and tune)."""
    from genforge.finetune.classifier import load_classifier

    model, tokenizer, info = load_classifier(folder)
    model.to(runs_on(folder))
    unknown = {lab for _, labs in examples for lab in labs} - set(info["labels"])
    if unknown:
        raise DataError(f"labels the classifier does not know: {sorted(unknown)[:5]}")
    probs = predict_probs(model, tokenizer, [t for t, _ in examples], seq_len=info["seq_len"],
                          multi_label=info["multi_label"], batch_size=batch_size)
    y_true = encode_targets(examples, info["labels"], info["multi_label"]).numpy().astype(int)
    y_pred = (probs > 0.5).astype(int) if info["multi_label"] else probs.argmax(1)
    return report(y_true, y_pred, info["labels"], info["multi_label"]) | {"n": len(examples)}

