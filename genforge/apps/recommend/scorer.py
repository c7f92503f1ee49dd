"""The interest scorer: a genforge classifier reading "history text [SEP] candidate text" -> interacted or not.

It is trained by `genforge.finetune.classify.classify` like any classifier (labels "0"/"1"), on pairs
made from the build's own data: a user's older items as the history, an item they went on to interact
with as a positive, and hard (candidates they skipped) plus random negatives. A pair is one text with
the tokenizer's separator between the parts (BERT tokenizers read "[SEP]" as their special token), so no
pair support is needed in the classifier. The history part is cut to `history_items` titles so the
candidate always fits in `seq_len`.

A cross-encoder costs a forward pass per (user, candidate), so its base is the encoder cut to its first
`layers` transformer layers (a 2-layer MiniLM is ~3x faster than the 6-layer one), and it only re-scores
the ranker's short list (see recommender.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.recommend.data import Items


def separator(tokenizer: Any) -> str:
    return f" {tokenizer.sep_token} " if getattr(tokenizer, "sep_token", None) else " | "


def history_text(items: Items, history: list[int], limit: int) -> str:
    return "; ".join(items.titles[i] for i in history[:limit])


def pair_texts(items: Items, history: str, candidates: list[int], sep: str) -> list[str]:
    return [f"{history}{sep}{items.texts[c]}" for c in candidates]


def truncated_base(encoder: Path, layers: int, out: Path) -> Path:
    """A copy of `encoder` keeping its first `layers` transformer layers (the scorer's base model)."""
    from transformers import AutoModel

    from genforge.finetune.model import hf_config, layer_list, load_pretrained, load_tokenizer

    model, _ = load_pretrained(AutoModel, encoder, hf_config(encoder))
    blocks = layer_list(model)
    if blocks is not None and layers < len(blocks):
        del blocks[layers:]
        model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    load_tokenizer(encoder).save_pretrained(out)
    return out


def train_scorer(rows: list[tuple[str, int]], base: Path, out: Path, *, steps: int, batch_size: int,
                 seq_len: int, lr: float, seed: int) -> Path:
    """Fine-tune the classifier on (pair text, 0/1) rows; returns its run folder."""
    import json

    from genforge.artifacts import atomic_open
    from genforge.finetune.classify import classify
    from genforge.finetune.config import ClassifyConfig

    data = out.parent / "scorer_pairs.jsonl"
    with atomic_open(data) as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": str(label)}, ensure_ascii=False) + "\n")
    cfg = ClassifyConfig(model=base, data=data, out=out, max_steps=steps, batch_size=batch_size, seq_len=seq_len,
                         lr=lr, warmup_steps=max(1, steps // 10), eval_every=max(1, steps // 3),
                         eval_batches=20, seed=seed, bf16=False, select="loss")
    folder = classify(cfg)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # optimizer states: ~4x the model, not needed to serve
    return folder


class Scorer:
    """A loaded interest scorer: P(interaction) of each (history, candidate) pair."""

    def __init__(self, folder: Path):
        from genforge.finetune.classifier import load_classifier

        self.model, self.tokenizer, self.info = load_classifier(folder)
        self.positive = self.info["labels"].index("1")
        self.sep = separator(self.tokenizer)

    def score(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        from genforge.finetune.classifier import predict_probs

        if not texts:
            return np.zeros(0, dtype=np.float32)
        probs = predict_probs(self.model, self.tokenizer, texts, seq_len=self.info["seq_len"], multi_label=False,
                              batch_size=batch_size)
        return probs[:, self.positive]
