"""The models a server holds: loading each folder by kind, and the forward passes that are not decoding.

Kinds, told apart by the folder itself:
- "lm": a causal LM (full or LoRA adapter, merged on load): completions, chat, embeddings. Decoding
  runs on an `Engine`; embeddings use the HF module, which shares its storage with the fast forward
  where dtypes agree.
- "classifier": a `genforge finetune classify` run folder (classifier.json): /v1/classify, embeddings.
- "encoder": any other HF folder (a masked LM, a sentence encoder such as MiniLM): embeddings only.
Embeddings are the mean of the last hidden states over the input's tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.errors import ArtifactError, ConfigError
from genforge.serve.config import ServeConfig, Variant

EMBED_BATCH = 32


@dataclass
class ServedModel:
    name: str
    path: Path
    weight: float
    kind: str  # "lm" | "classifier" | "encoder"
    tokenizer: Any
    module: Any  # the torch module whose base model gives hidden states
    context: int | None
    decoder: Any = None  # lm
    engine: Any = None  # lm
    chat: bool = False  # lm: the tokenizer has (or was given) a chat template
    classifier: Any = None  # classifier: genforge.finetune.heads.Classifier
    info: dict[str, Any] = field(default_factory=dict)  # classifier.json
    created: int = field(default_factory=lambda: int(time.time()))
    lock: threading.Lock = field(default_factory=threading.Lock)  # one embeddings/classify forward at a time


def load_served(variant: Variant, cfg: ServeConfig, metrics: Any = None) -> ServedModel:
    """Load one served folder with the settings of `cfg` (dtype, backend, batch and queue sizes)."""
    from genforge.finetune.classifier import CLASSIFIER_JSON, load_classifier
    from genforge.finetune.model import load_tokenizer
    from genforge.models.load import (
        check_finished_run,
        detect_objective,
        load_model,
        max_positions,
        read_model_config,
    )

    path = variant.path
    if not path.is_dir():
        raise ArtifactError(f"model {path} is not a folder (expected a genforge run folder or HF model folder)")
    check_finished_run(path)
    common = {"name": variant.name, "path": path, "weight": variant.weight}
    if (path / CLASSIFIER_JSON).is_file():
        classifier, tokenizer, info = load_classifier(path)
        body = classifier.body
        return ServedModel(kind="classifier", tokenizer=tokenizer, module=body, classifier=classifier, info=info,
                           context=min(info["seq_len"], max_positions(body.config) or info["seq_len"]), **common)
    config = read_model_config(path)
    tokenizer = load_tokenizer(path)
    try:
        objective = detect_objective(config)
    except ArtifactError:
        objective = None
    if objective != "clm":
        module = _load_encoder(path) if objective is None else load_model(path, "mlm")[0].eval()
        return ServedModel(kind="encoder", tokenizer=tokenizer, module=module,
                           context=max_positions(module.config), **common)
    from genforge.finetune.sft import ensure_chat_template
    from genforge.generate.decoder import load_decoder
    from genforge.serve.engine import Engine

    model, _ = load_model(path, "clm")
    decoder = load_decoder(model, tokenizer, cfg.dtype, cfg.backend)
    try:
        ensure_chat_template(tokenizer, path)
        chat = True
    except ConfigError:
        chat = False
    engine = Engine(decoder, name=variant.name, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                    cache_len=cfg.cache_len, max_prefill_tokens=cfg.max_prefill_tokens,
                    prefill_chunk=cfg.prefill_chunk, metrics=metrics)
    return ServedModel(kind="lm", tokenizer=tokenizer, module=model, context=decoder.context, decoder=decoder,
                       engine=engine, chat=chat, **common)


def _load_encoder(path: Path) -> Any:
    import torch
    from transformers import AutoModel

    from genforge.models.load import from_pretrained

    return from_pretrained(AutoModel, path, dtype=torch.float32).eval()


def embed(served: ServedModel, inputs: list[list[int]]) -> list[list[float]]:
    """Mean-pooled last hidden states of token-id inputs, scaled to unit length (blocking: call it from a worker
    thread). Unit length as OpenAI's embeddings and sentence-transformers' encoders (MiniLM) have: clients rank
    by dot product, which is then the cosine similarity."""
    import torch

    base = served.module.base_model
    pad = served.tokenizer.pad_token_id or 0
    out: list[list[float]] = []
    with served.lock, torch.inference_mode():
        for first in range(0, len(inputs), EMBED_BATCH):
            chunk = inputs[first:first + EMBED_BATCH]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            states = base(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            weights = mask[..., None].to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1)
            out += torch.nn.functional.normalize(pooled, dim=-1).tolist()
    return out


def classify(served: ServedModel, texts: list[str]) -> tuple[list[dict[str, Any]], int]:
    """(one result per text: label or labels and every label's probability, prompt tokens read)."""
    from genforge.finetune.classifier import predict_probs

    info = served.info
    with served.lock:
        probs = predict_probs(served.classifier, served.tokenizer, texts, seq_len=info["seq_len"],
                              multi_label=info["multi_label"])
    labels = info["labels"]
    results = []
    for row in probs.tolist():
        scores = dict(zip(labels, row, strict=True))
        if info["multi_label"]:
            results.append({"labels": [lab for lab, p in scores.items() if p >= 0.5], "scores": scores})
        else:
            results.append({"label": max(scores, key=scores.get), "scores": scores})
    tokens = sum(len(ids) for ids in served.tokenizer(texts, truncation=True, max_length=info["seq_len"])["input_ids"])
    return results, tokens
