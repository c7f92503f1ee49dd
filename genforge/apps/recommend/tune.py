"""`build --tune-encoder`: the sentence encoder fine-tuned so that items people use together embed close.

A pretrained sentence encoder places items by what their text says; users group them by taste (a sequel,
a studio, a mood). Tuning on pairs of an item and one of its strongest co-occurrence neighbours (from the
build's training interactions only, so held-out interactions never leak) moves the text space towards
taste, and a new item with no interactions gets the benefit from its text alone.

Loss: in-batch contrastive (InfoNCE, both directions, temperature 0.05): every other pair's item in the
batch is a negative, as in sentence-transformers' MultipleNegativesRankingLoss (van den Oord et al. 2018;
Henderson et al. 2017), except in pairs that share an item (an item is the anchor of up to 3 pairs and the
neighbour in others): their logits are masked, since they would teach an item, or its own neighbour, as
unrelated (sentence-transformers avoids such false negatives with its NoDuplicatesBatchSampler). It is an
objective on genforge's training engine like every other; the tuned encoder is saved as OUT/encoder (an HF
folder) and used for items, new items and text queries alike.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from genforge.adversarial.neighbours import mean_pool
from genforge.errors import DataError


class MeanPooled(torch.nn.Module):
    """The encoder's sentence embedding as `SentenceEncoder` computes it at inference (`mean_pool`)."""

    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.body(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


@dataclass
class ContrastiveObjective:
    """Symmetric in-batch InfoNCE over (anchor, positive) embeddings: a batch holds the B anchors' texts
    then their B positives' texts, embedded in one pass, and `items` their 2B item ids; pairs sharing an item
    are not each other's negatives."""

    temperature: float = 0.05
    name: str = "contrastive"

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        a, b = model(batch["input_ids"], batch["attention_mask"]).float().chunk(2)
        ia, ib = batch["items"].chunk(2)
        shared = (ia[:, None] == ia) | (ia[:, None] == ib) | (ib[:, None] == ia) | (ib[:, None] == ib)
        shared.fill_diagonal_(False)  # symmetric: the same mask serves both directions
        logits = (a @ b.T / self.temperature).masked_fill(shared, float("-inf"))
        target = torch.arange(len(a), device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return loss, {"tokens": torch.tensor(len(a))}


def co_interacted_pairs(neighbours: sp.csr_matrix, per_item: int, seed: int) -> list[tuple[int, int]]:
    """(item, neighbour) for each item's `per_item` strongest co-occurrence neighbours, shuffled; a pair
    is kept once (i, j) and never again as (j, i), so no batch holds a pair and its mirror."""
    pairs, seen = [], set()
    for i in range(neighbours.shape[0]):
        row = neighbours[i]
        for j in row.indices[np.argsort(-row.data, kind="stable")][:per_item].tolist():
            if i != j and (j, i) not in seen:
                seen.add((i, j))
                pairs.append((i, j))
    random.Random(seed).shuffle(pairs)
    return pairs


def tune_encoder(encoder: Path, texts: list[str], neighbours: sp.csr_matrix, out: Path, *, steps: int,
                 batch_size: int, lr: float, seed: int, per_item: int = 3, max_length: int = 64) -> Path:
    """Fine-tune `encoder` on co-interacted item pairs; returns the tuned HF folder `out`."""
    from transformers import AutoModel

    from genforge.finetune.batches import ShuffledBatches, pad
    from genforge.finetune.model import hf_config, load_pretrained, load_tokenizer
    from genforge.train.config import TrainConfig
    from genforge.train.engine import train

    pairs = co_interacted_pairs(neighbours, per_item, seed)
    if len(pairs) < batch_size:
        raise DataError(f"only {len(pairs)} co-interacted item pairs to tune the encoder on: give more "
                        "interactions or build without --tune-encoder")
    tokenizer = load_tokenizer(encoder)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id or 0

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [pairs[i][0] for i in indices] + [pairs[i][1] for i in indices]
        return {"input_ids": pad([ids[r] for r in rows], pad_id),
                "attention_mask": pad([[1] * len(ids[r]) for r in rows], 0), "items": torch.tensor(rows)}

    torch.manual_seed(seed)
    body, _ = load_pretrained(AutoModel, encoder, hf_config(encoder))
    model = MeanPooled(body)
    run = out.parent / "encoder_run"
    cfg = TrainConfig(out=run, max_steps=steps, batch_size=batch_size, lr=lr, min_lr=0.0,
                      warmup_steps=max(1, steps // 10), eval_every=0, save_every=0, log_every=max(1, steps // 10),
                      seed=seed, bf16=False)
    cfg.check()
    train(model, ContrastiveObjective(), ShuffledBatches(len(pairs), batch_size, 1, seed, collate), cfg, run)
    model.body.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(run, ignore_errors=True)  # checkpoints with optimizer states: not needed to serve
    return out
