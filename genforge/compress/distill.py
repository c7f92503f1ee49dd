"""`--method distill`: train a smaller student to imitate the teacher (Hinton et al. 2015; DistilBERT).

The loss is an objective for the one engine: alpha x KL(teacher || student) on logits softened by the
temperature T, times T^2 (so its gradients keep their size as T changes), plus (1 - alpha) x the
task's own loss (next-token cross-entropy for causal LMs, masked-token CE for masked LMs, the labels'
CE or BCE for classifiers), plus, optionally, hidden_weight x (1 - cosine) between student hidden
states and the teacher layers they stand for (through a learned projection when widths differ).
Language models distil over every predicted token of packed windows; classifiers over labelled texts.

The student is either a copy of the teacher with fewer layers, evenly spaced (DistilBERT's init: it
starts from the teacher's own weights, which is what makes a short distillation work), or a fresh
genforge preset (`--student-preset`) with the teacher's tokenizer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genforge.compress.blocks import layers_of
from genforge.compress.config import CompressConfig
from genforge.compress.subject import Subject
from genforge.errors import ConfigError
from genforge.train.objectives import IGNORE, predicted_tokens, token_cross_entropy


class DistillStudent(nn.Module):
    """The student, plus one projection per matched layer when hidden states are matched across widths.

    The engine trains (and checkpoints) this whole module; only `student` is exported.
    """

    def __init__(self, student: nn.Module, projections: nn.ModuleList | None = None):
        super().__init__()
        self.student = student
        self.projections = projections

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)


def outputs(model: nn.Module, batch: dict[str, torch.Tensor], kind: str, hidden: bool
            ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """(logits in float32, hidden states or None) of an LM or a genforge Classifier."""
    mask = batch.get("attention_mask")
    if kind == "classifier":
        out = model.body(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=hidden)
        logits = out.logits if model.head is None else model.head(out.last_hidden_state, mask)
    else:
        extra = {"use_cache": False} if kind == "clm" else {}
        out = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=hidden, **extra)
        logits = out.logits
    return logits.float(), (out.hidden_states if hidden else None)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm a pre-norm decoder (Llama) applies after its last layer, which HF's last hidden state already
    includes; None for models without one (BERT normalises inside every layer)."""
    body = getattr(model, "body", model)  # a genforge Classifier's transformer
    norm = getattr(getattr(body, "base_model", body), "norm", None)
    return norm if isinstance(norm, nn.Module) else None


@dataclass
class DistillObjective:
    """alpha x KL_T x T^2 + (1 - alpha) x task loss [+ hidden_weight x (1 - cos)] (see the module docstring)."""

    teacher: nn.Module
    kind: str  # clm | mlm | classifier
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    layer_map: list[tuple[int, int]] = field(default_factory=list)  # (student, teacher) hidden-state index
    multi_label: bool = False
    teacher_ids: torch.Tensor | None = None  # student token id -> teacher token id (trimmed vocabularies)
    name: str = "distill"

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """LM kinds average over predicted tokens (the engine's micro-batch weights); a classifier over examples."""
        return None if self.kind == "classifier" else predicted_tokens(batch)

    def soft_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        if self.multi_label:  # independent labels: BCE against the teacher's softened probabilities
            return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
        return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                        reduction="batchmean") * t * t

    def hidden_loss(self, model: DistillStudent, student: tuple, teacher: tuple, mask: torch.Tensor | None
                    ) -> torch.Tensor:
        """Mean (1 - cos) over the matched pairs. In a pre-norm decoder (Llama) HF's last hidden state has the
        final norm applied and the others do not, so a pair with one side last gets the other side through its
        own model's final norm: states are compared like with like."""
        losses = []
        s_norm, t_norm = final_norm(model.student), final_norm(self.teacher)
        s_last, t_last = len(student) - 1, len(teacher) - 1
        for i, (s, t) in enumerate(self.layer_map):
            hs, ht = student[s], teacher[t]
            if s == s_last and t != t_last and t_norm is not None:
                with torch.no_grad():
                    ht = t_norm(ht)
            elif t == t_last and s != s_last and s_norm is not None:
                hs = s_norm(hs)
            if model.projections is not None:
                hs = model.projections[i](hs)
            cos = F.cosine_similarity(hs.float(), ht.float(), dim=-1)
            weight = mask.to(cos.dtype) if mask is not None else torch.ones_like(cos)
            losses.append(((1 - cos) * weight).sum() / weight.sum().clamp(min=1))
        return torch.stack(losses).mean()

    def loss(self, model: DistillStudent, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hidden = self.hidden_weight > 0
        s_logits, s_hidden = outputs(model.student, batch, self.kind, hidden)
        teacher_batch = batch
        if self.teacher_ids is not None:
            table = self.teacher_ids.to(batch["input_ids"].device)
            teacher_batch = {**batch, "input_ids": table[batch["input_ids"]]}
        with torch.no_grad():
            t_logits, t_hidden = outputs(self.teacher, teacher_batch, self.kind, hidden)
        labels = batch["labels"]
        if self.kind == "classifier":
            task = (F.binary_cross_entropy_with_logits(s_logits, labels) if self.multi_label
                    else F.cross_entropy(s_logits, labels))
            soft = self.soft_loss(s_logits, t_logits)
            count = torch.tensor(labels.shape[0], device=labels.device)
        else:
            task, metrics = token_cross_entropy(s_logits, labels)
            predicted = labels != IGNORE
            soft = self.soft_loss(s_logits[predicted], t_logits[predicted])
            count = metrics["tokens"]
        loss = self.alpha * soft + (1 - self.alpha) * task
        if hidden:
            loss = loss + self.hidden_weight * self.hidden_loss(model, s_hidden, t_hidden, batch.get("attention_mask"))
        return loss, {"tokens": count, "logits": s_logits.detach()}


def evenly_spaced(total: int, keep: int) -> list[int]:
    """DistilBERT's choice of teacher layers: every (total / keep)-th, from the first."""
    return [round(i * total / keep) for i in range(keep)]


def layer_prefix(model: nn.Module) -> str:
    layers = layers_of(model)
    return next(name for name, m in model.named_modules() if m is layers)


def fewer_layers(teacher: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of an HF model with only the teacher layers `keep`, renumbered from 0."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(teacher)(config)
    prefix = layer_prefix(teacher) + "."
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) not in keep:
                continue
            key = f"{prefix}{keep.index(int(index))}.{rest}"
        state[key] = value.clone()
    student.load_state_dict(state)
    return student


def preset_body(cfg: CompressConfig, teacher: Subject) -> nn.Module:
    """A fresh body of a genforge preset, same family (Llama decoder / BERT encoder) and vocabulary."""
    from genforge.models.load import max_positions
    from genforge.models.presets import model_config

    body = teacher.transformer
    tc = body.config
    if tc.model_type not in ("llama", "bert"):
        raise ConfigError(f"--student-preset builds Llama or BERT students; the teacher is {tc.model_type}")
    special = {k: getattr(tc, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
    config = model_config("clm" if tc.model_type == "llama" else "mlm", cfg.student_preset, vocab_size=tc.vocab_size,
                          max_positions=max_positions(tc) or 512,
                          special_ids={k: v for k, v in special.items() if v is not None},
                          overrides={k: getattr(cfg, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                                 "intermediate_size")})
    if teacher.kind == "classifier":
        for key in ("num_labels", "id2label", "label2id", "problem_type"):
            setattr(config, key, getattr(tc, key))
    torch.manual_seed(cfg.seed)
    return type(body)(config)


def make_student(cfg: CompressConfig, teacher: Subject) -> tuple[Subject, list[tuple[int, int]]]:
    """(student, [(student hidden index, teacher hidden index)]) from `--student-layers` or `--student-preset`."""
    from genforge.finetune.heads import Classifier, build_head

    body = teacher.transformer
    total = body.config.num_hidden_layers
    if cfg.student_preset:
        student_body = preset_body(cfg, teacher)
        n = student_body.config.num_hidden_layers
        layer_map = [(i, round(i * total / n)) for i in range(1, n + 1)]
    else:
        n = cfg.student_layers or max(1, total // 2)
        if n >= total:
            raise ConfigError(f"--student-layers {n} is not fewer than the teacher's {total} layers")
        keep = evenly_spaced(total, n)
        student_body = fewer_layers(body, keep)
        layer_map = [(i + 1, t + 1) for i, t in enumerate(keep)]
    if teacher.kind != "classifier":
        return teacher.replace(student_body), layer_map
    head = teacher.model.head
    if head is not None:
        width = student_body.config.hidden_size
        head = copy.deepcopy(head) if width == body.config.hidden_size else build_head(teacher.info["head"], width,
                                                                                       len(teacher.info["labels"]))
    return teacher.replace(Classifier(student_body, head, teacher.model.typos)), layer_map
