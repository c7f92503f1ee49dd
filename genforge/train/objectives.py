"""Training objectives: what a stage plugs into the one loop of `genforge.train.engine`.

An objective is a small object with `loss(model, batch) -> (loss, metrics)`: batch is a dict of
tensors, loss a scalar to minimise, metrics a dict of scalar tensors that must include "tokens" (the
number of predicted tokens, so evaluation can weight batches correctly). One whose loss is a mean over
tokens also says, with `count(batch)`, how many it will average over before the forward pass: the engine
then weights the micro-batches of a step by it, so a step's gradient is the mean over every predicted token
of the global batch however it is split into micro-batches and processes (without `count`, each micro-batch
counts the same). The engine never asks which objective it runs. Pretraining objectives also say how to turn raw token windows into a batch
(`window_len`, `make_batch`); later stages (SFT, classification, distillation, adversarial wrappers)
bring their own batches and reuse `loss` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

IGNORE = -100  # label of positions that are not predicted (the convention of HF and torch)


class Objective(Protocol):
    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss (mean over predicted tokens) and metrics, at least {"tokens": count}."""
        ...


def embeddings(model: Any, side: str) -> torch.nn.Module | None:
    """The token-embedding module (`side` "input") or output projection ("output") of an HF model, found
    through the wrappers training puts around it: DDP and torch.compile (`module`), a genforge Classifier
    (`body`), a wrapped LM (`model`). None if no module on the way exposes one."""
    queue = [model]
    while queue:
        module = queue.pop(0)
        get = getattr(module, f"get_{side}_embeddings", None)
        if callable(get):
            try:
                found = get()
            except NotImplementedError:
                found = None
            if isinstance(found, torch.nn.Module):
                return found
        queue += [getattr(module, name) for name in ("module", "body", "model")
                  if isinstance(getattr(module, name, None), torch.nn.Module)]
    return None


def predicted_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The `count` of a token-level loss: how many labels are not -100."""
    return (batch["labels"] != IGNORE).sum()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy over labels != -100, computed in fp32 even under bf16 autocast."""
    loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)
    return loss, {"tokens": (labels != IGNORE).sum()}


@dataclass
class ClmObjective:
    """Causal LM: predict token t+1 from tokens <= t. A window of seq_len + 1 gives seq_len targets."""

    name: str = "clm"

    def window_len(self, seq_len: int) -> int:
        return seq_len + 1

    def make_batch(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return predicted_tokens(batch)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Labels are already shifted, so the model's own (shifting, copying) loss is not used. A batch with
        # position_ids holds packed sequences, right-padded: from the restarts of the positions transformers
        # builds a block-diagonal causal mask (its packed-sequence format), which it does only when given no
        # 2-D mask; a causal model needs none for right padding.
        if "position_ids" in batch:
            inputs = {"position_ids": batch["position_ids"]}
        else:
            inputs = {"attention_mask": batch.get("attention_mask")}
        logits = model(input_ids=batch["input_ids"], use_cache=False, **inputs).logits
        return token_cross_entropy(logits, batch["labels"])


def mask_tokens(input_ids: torch.Tensor, *, special_ids: torch.Tensor, mask_id: int, vocab_size: int,
                probability: float = 0.15, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: select `probability` of the non-special tokens; of those 80% -> mask, 10% -> a
    random non-special token, 10% unchanged. Returns (inputs, labels) with labels -100 where not selected.

    Special tokens (pad, eos between documents, ...) are never selected nor used as random
    replacements: predicting them teaches nothing and would leak document boundaries.
    """
    special = torch.isin(input_ids, special_ids)
    selected = torch.bernoulli(torch.full(input_ids.shape, probability), generator=generator).bool() & ~special
    if not selected.any() and (~special).any():  # a loss over zero tokens would be NaN
        selected.view(-1)[(~special).view(-1).nonzero()[0]] = True
    labels = torch.where(selected, input_ids, IGNORE)
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (draw < 0.8)
    to_random = selected & (draw >= 0.8) & (draw < 0.9)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special_ids[special_ids < vocab_size]] = False
    choices = allowed.nonzero().flatten()
    random_ids = choices[torch.randint(len(choices), input_ids.shape, generator=generator)]
    inputs = torch.where(to_mask, mask_id, torch.where(to_random, random_ids, input_ids))
    return inputs, labels


@dataclass
class MlmObjective:
    """Masked LM: predict the selected tokens of a window from the whole (bidirectional) window."""

    mask_id: int
    vocab_size: int
    special_ids: list[int] = field(default_factory=list)
    probability: float = 0.15
    name: str = "mlm"

    def window_len(self, seq_len: int) -> int:
        return seq_len

    def make_batch(self, windows: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        inputs, labels = mask_tokens(windows, special_ids=torch.tensor(self.special_ids, dtype=torch.long),
                                     mask_id=self.mask_id, vocab_size=self.vocab_size,
                                     probability=self.probability, generator=generator)
        return {"input_ids": inputs, "labels": labels}

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return predicted_tokens(batch)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Only the selected positions go through the output projection: with a 30k vocabulary it is half
        of a small encoder's FLOPs, and 85% of its rows would be thrown away. A pre-hook on the projection
        (removed after the call) keeps the forward the model's own, so DDP/FSDP hooks run as usual;
        the logits come back as [selected, vocab]."""
        labels = batch["labels"]
        selected = labels != IGNORE
        head = embeddings(model, "output")
        handle = head.register_forward_pre_hook(lambda _, args: (args[0][selected],)) if head is not None else None
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        finally:
            if handle is not None:
                handle.remove()
        return token_cross_entropy(logits, labels[selected] if head is not None else labels)
