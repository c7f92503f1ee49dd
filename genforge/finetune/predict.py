"""`genforge predict`: label texts with a fine-tuned classifier (any saved variant: full, merged, adapter).

`--text` prints each label with the class probabilities; `--data FILE --out preds.jsonl` writes
`{"text", "label", "probs": {label: p}}` per input record, in input order. Multi-label classifiers
give `label` as the list of labels whose probability exceeds `--threshold`.

A file of a million texts takes hours on a CPU, so a `--out` run resumes (writes are atomic; long runs
resume). It records what its rows depend on in `OUT.partial.json`, then appends the rows of each chunk of
texts to `OUT.partial` and flushes them; once all are there, that file is renamed onto `--out`, so `--out`
only ever appears complete. `--resume` continues after the partial file's last whole chunk.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from genforge.artifacts import (
    check_output_file,
    check_same_settings,
    model_sha256,
    read_json,
    reading,
    sha256_file,
    write_json,
)
from genforge.errors import ArtifactError, DataError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.config import PredictConfig
from genforge.finetune.data import get_field, read_records
from genforge.models.load import check_finished_run

# Texts per predict_probs call of a --out run: a kill loses at most one chunk (a few seconds of work), and
# memory holds one chunk's rows, not the file's.
CHUNK = 1024


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


def partial_path(out: Path) -> Path:
    return Path(f"{out}.partial")


def settings_path(out: Path) -> Path:
    return Path(f"{out}.partial.json")


def check_partial(cfg: PredictConfig) -> None:
    """The folder rules of the resumable commands (`artifacts.check_resume_folder`) for an output file: --resume
    needs an interrupted run's partial file; a new run refuses to overwrite one (a finished --out it redoes)."""
    partial = partial_path(cfg.out)
    if cfg.resume and not partial.is_file():
        raise ArtifactError(f"nothing to resume: {partial} does not exist; drop --resume")
    if not cfg.resume and partial.exists():
        raise ArtifactError(f"{partial} holds an unfinished run: add --resume to continue it, or delete it to "
                            "start over")


def fingerprint(cfg: PredictConfig) -> dict[str, Any]:
    """What the rows depend on. --batch-size is left out: it changes speed and memory, and the rows at most by
    float rounding (a resume on a busier machine may need a smaller one)."""
    return {"model_sha256": model_sha256(cfg.model),
            "data_sha256": sha256_file(cfg.data) if cfg.data is not None else None, "text": list(cfg.text),
            "text_field": cfg.text_field, "threshold": cfg.threshold}


def whole_chunks(path: Path, texts: list[str]) -> tuple[int, int]:
    """How many texts the partial file holds in whole chunks, and their length in bytes (where appending goes
    on). The rest is dropped and predicted again: a last line cut by a kill, and the lines of a chunk the kill
    stopped while they were written, so every chunk is predicted whole, in the same batches (and so to the
    same rounding) as an uninterrupted run's. Read line by line: the file may hold a million rows."""
    remedy = "delete it to predict anew, or choose another --out"
    done = kept = size = 0
    with reading(path, remedy), open(path, "rb") as f:
        for number, line in enumerate(f, 1):  # binary lines end at b"\n" alone, as `artifacts.whole_lines`
            if not line.endswith(b"\n"):
                break
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"line {number} is no prediction ({type(e).__name__}: {e})") from None
            if number > len(texts) or text != texts[number - 1]:
                raise ValueError(f"line {number} is not the prediction of text {number} of the input")
            size += len(line)
            if number % CHUNK == 0 or number == len(texts):  # the last chunk may be short
                done, kept = number, size
    return done, kept


def write_predictions(cfg: PredictConfig, model: Any, tokenizer: Any, info: dict[str, Any],
                      texts: list[str]) -> None:
    """Predict chunk by chunk into the partial file (after its whole chunks, with --resume), then rename it
    onto --out. Settings and partial rows are checked before anything is written, so a refused --resume
    leaves the files as they were."""
    from tqdm import tqdm

    partial, current = partial_path(cfg.out), fingerprint(cfg)
    done = 0
    if cfg.resume:
        saved = read_json(settings_path(cfg.out), f"delete {partial} to predict anew, or choose another --out",
                          kind=dict)
        check_same_settings(saved, current, files={"model_sha256": f"the classifier {cfg.model}",
                                                   "data_sha256": f"the data {cfg.data or '(--text)'}"})
        done, size = whole_chunks(partial, texts)
        os.truncate(partial, size)
    else:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(settings_path(cfg.out), current)
    with (tqdm(total=len(texts), initial=done, unit="text", desc="predict", file=sys.stderr,
               disable=len(texts) < 100) as bar,
          open(partial, "a" if cfg.resume else "w", encoding="utf-8") as f):
        for first in range(done, len(texts), CHUNK):
            chunk = texts[first:first + CHUNK]
            probs = predict_probs(model, tokenizer, chunk, seq_len=info["seq_len"], multi_label=info["multi_label"],
                                  batch_size=cfg.batch_size, progress=bar.update)
            rows = label_rows(chunk, probs, info["labels"], info["multi_label"], cfg.threshold)
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            f.flush()
        os.fsync(f.fileno())
    os.replace(partial, cfg.out)
    settings_path(cfg.out).unlink(missing_ok=True)


def predict(cfg: PredictConfig) -> list[dict[str, Any]] | Path:
    """Classify `cfg.text` or the texts of `cfg.data`; print them and return the rows, or write JSONL to
    `cfg.out` and return its path (the rows of a long file are not kept in memory)."""
    import typer
    from tqdm import tqdm

    if cfg.out is not None:  # before the model loads and predicts, not after
        check_output_file(cfg.out)
        check_partial(cfg)
    check_finished_run(cfg.model)
    model, tokenizer, info = load_classifier(cfg.model)
    texts = list(cfg.text) if cfg.text else read_texts(cfg.data, cfg.text_field)
    if cfg.out is not None:
        write_predictions(cfg, model, tokenizer, info, texts)
        typer.echo(f"wrote {len(texts)} predictions to {cfg.out}", err=True)
        return cfg.out
    with tqdm(total=len(texts), unit="text", desc="predict", file=sys.stderr, disable=len(texts) < 100) as bar:
        probs = predict_probs(model, tokenizer, texts, seq_len=info["seq_len"], multi_label=info["multi_label"],
                              batch_size=cfg.batch_size, progress=bar.update)
    rows = label_rows(texts, probs, info["labels"], info["multi_label"], cfg.threshold)
    for row in rows:
        label = ", ".join(row["label"]) if isinstance(row["label"], list) else row["label"]
        ranked = sorted(row["probs"].items(), key=lambda kv: -kv[1])
        typer.echo(f"{label or '(none)'}\t" + "  ".join(f"{k}={v:.3f}" for k, v in ranked)
                   + (f"\t{row['text']}" if len(rows) > 1 else ""))
    return rows
