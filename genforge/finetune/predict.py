"""`genforge predict`: label texts with a fine-tuned classifier (any saved variant: full, merged, adapter).

`--text` prints each label with the class probabilities; `--data FILE --out preds.jsonl` writes
`{"text", "label", "probs": {label: p}}` per input record, in input order. Multi-label classifiers
give `label` as the list of labels whose probability exceeds `--threshold`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from genforge.artifacts import check_output_file, write_jsonl
from genforge.errors import DataError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.config import PredictConfig
from genforge.finetune.data import get_field, read_records


def read_texts(path: Path, text_field: str) -> list[str]:
    """Texts of a CSV/TSV/JSONL/JSON file (`text_field`), or of a plain text file (one per non-blank line)."""
    texts = []
    for lineno, record in read_records(path, plain_field=text_field):
        text = get_field(path, lineno, record, text_field)
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: '{text_field}' must be a string")
        texts.append(text)
    if not texts:
        raise DataError(f"{path} holds no texts")
    return texts


def label_rows(texts: list[str], probs: Any, labels: list[str], multi_label: bool,
               threshold: float = 0.5) -> list[dict[str, Any]]:
    rows = []
    for text, p in zip(texts, probs, strict=True):
        if multi_label:
            label: Any = [lab for lab, q in zip(labels, p, strict=True) if q > threshold]
        else:
            label = labels[int(p.argmax())]
        rows.append({"text": text, "label": label,
                     "probs": {lab: round(float(q), 6) for lab, q in zip(labels, p, strict=True)}})
    return rows


def predict(cfg: PredictConfig) -> list[dict[str, Any]]:
    """Classify `cfg.text` or the texts of `cfg.data`; print them, or write JSONL to `cfg.out`."""
    import typer
    from tqdm import tqdm

    if cfg.out is not None:  # before the model loads and predicts, not after
        check_output_file(cfg.out)
    model, tokenizer, info = load_classifier(cfg.model)
    texts = list(cfg.text) if cfg.text else read_texts(cfg.data, cfg.text_field)
    with tqdm(total=len(texts), unit="text", desc="predict", file=sys.stderr, disable=len(texts) < 100) as bar:
        probs = predict_probs(model, tokenizer, texts, seq_len=info["seq_len"], multi_label=info["multi_label"],
                              batch_size=cfg.batch_size, progress=bar.update)
    rows = label_rows(texts, probs, info["labels"], info["multi_label"], cfg.threshold)
    if cfg.out is not None:
        write_jsonl(cfg.out, rows)
        typer.echo(f"wrote {len(rows)} predictions to {cfg.out}", err=True)
    else:
        for row in rows:
            label = ", ".join(row["label"]) if isinstance(row["label"], list) else row["label"]
            ranked = sorted(row["probs"].items(), key=lambda kv: -kv[1])
            typer.echo(f"{label or '(none)'}\t" + "  ".join(f"{k}={v:.3f}" for k, v in ranked)
                       + (f"\t{row['text']}" if len(rows) > 1 else ""))
    return rows
