"""`genforge app support build`: knowledge base + history -> an assistant folder.

OUT/index (passages, FAISS vectors), OUT/intent (a `finetune classify` run, when the FAQ has ids),
OUT/chat (a `finetune sft` run, when a history is given), OUT/support.json (encoder, prompt settings and
the calibrated thresholds), OUT/calibration.json, then the manifest (stage "app.support.build").
`genforge app support calibrate` re-runs the calibration alone on a built folder.
Calibration questions are --val, or else held out of the index: hash bucket 8 of each FAQ entry's question
variants (all but the first when every variant falls in it, so the entry stays answerable), and bucket 8 of
--oos (the rest of --oos trains the classifier).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import time
from collections.abc import Collection
from pathlib import Path

import numpy as np

from genforge.apps.support.assistant import META, Assistant, load_assistant, read_meta
from genforge.apps.support.config import BuildConfig, CalibrateConfig
from genforge.apps.support.index import Encoder, build_index, load_encoder
from genforge.apps.support.ingest import Passage, ingest, kb_files
from genforge.apps.support.ood import FILE as OOD_FILE
from genforge.apps.support.ood import OutOfScope, fit_intent_ood, is_current, spread
from genforge.apps.support.policy import OOS, Thresholds, calibrate, calibrate_intent
from genforge.artifacts import begin_output, check_output, write_json, write_manifest
from genforge.errors import DataError
from genforge.finetune.data import hash_bucket, read_records
from genforge.models.load import read_model_config

VAL_BUCKET = 8
INTENTS = "intents.csv"  # the intent classifier's training questions, kept in OUT/work
INTENTS_VAL = "intents_val.csv"  # its validation questions, when the calibration questions were held out


def read_questions(path: Path, labelled: bool = True) -> list[tuple[str, str]]:
    """(text, label) rows of a CSV/JSONL/JSON (text or question; label, intent or id) or a plain text file."""
    rows = []
    for lineno, row in read_records(path, plain_field="text"):
        text = str(row.get("text") or row.get("question") or "").strip()
        label = str(row.get("label") or row.get("intent") or row.get("id") or "").strip()
        if labelled and not label:
            raise DataError(f"{path}:{lineno}: needs a 'label' (the FAQ id, or '{OOS}')")
        if text:
            rows.append((text, label or OOS))
    if not rows:
        raise DataError(f"{path} holds no questions")
    return rows


def check_labels(path: Path, rows: list[tuple[str, str]], entries: Collection[str]) -> None:
    """Refuse labelled questions whose label is neither an entry of the knowledge base (a FAQ id) nor 'oos':
    they could never be answered right, and would skew the thresholds and metrics without a word."""
    unknown = sorted({label for _, label in rows if label != OOS and label not in entries})
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise DataError(f"{path}: label(s) {', '.join(map(repr, unknown[:5]))}{more} are neither FAQ ids of the "
                        f"knowledge base nor '{OOS}'")


def split_calibration(passages: list[Passage], oos: list[str]) -> tuple[list[Passage], list[tuple[str, str]], list[str]]:
    """(indexed passages, calibration rows, oos rows for training) without a --val file. An entry keeps at least
    one variant in the index (its first, when all of them fall in the bucket): held out whole, it could never
    be answered."""
    variants: dict[str, list[Passage]] = {}
    for p in passages:
        if p.kind == "faq":
            variants.setdefault(p.entry, []).append(p)
    held = set()
    for group in variants.values():
        bucket = [p.id for p in group if hash_bucket(p.text) == VAL_BUCKET]
        held.update(bucket[1:] if len(bucket) == len(group) else bucket)
    val = [(p.text, p.entry) for p in passages if p.id in held]
    kept = [p for p in passages if p.id not in held]
    val += [(t, OOS) for t in oos if hash_bucket(t) == VAL_BUCKET]
    return kept, val, [t for t in oos if hash_bucket(t) != VAL_BUCKET]


def _write_questions(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def train_intents(cfg: BuildConfig, passages: list[Passage], oos: list[str], encoder: Path,
                  held_out: list[tuple[str, str]] | None = None) -> Path | None:
    """An intent (+ 'oos') classifier on the FAQ question variants, when the FAQ names its entries.
    `held_out`: the calibration questions split_calibration took out of `passages` and `oos` (hash bucket 8,
    the very bucket `finetune classify` would validate on, so its own split would find none); those with a
    label the classifier learns validate it instead."""
    from genforge.finetune.classify import classify
    from genforge.finetune.config import ClassifyConfig

    faq = [p for p in passages if p.kind == "faq" and not p.entry.startswith("faq-")]
    if not cfg.classify or len({p.entry for p in faq}) < 2:
        return None
    rows = [(p.text, p.entry) for p in faq] + [(t, OOS) for t in oos]
    data = _write_questions(Path(cfg.out) / "work" / INTENTS, rows)
    learnt = {label for _, label in rows}
    val = [(t, label) for t, label in held_out or [] if label in learnt]
    val_data = _write_questions(Path(cfg.out) / "work" / INTENTS_VAL, val) if val else None
    return classify(ClassifyConfig(model=encoder, data=data, val_data=val_data, out=Path(cfg.out) / "intent",
                                   seq_len=64, batch_size=cfg.classify_batch, max_steps=cfg.classify_steps, lr=cfg.classify_lr,
                                   warmup_steps=min(30, cfg.classify_steps // 5), eval_every=0, log_every=25,
                                   seed=cfg.seed, bf16=False))


def read_chat_inputs(cfg: BuildConfig) -> list[list[dict[str, str]]] | None:
    """--history's dialogues (None without one), with --model checked, before the output is touched: the
    chat model is trained last, and a bad input found only then would cost the earlier assistant in --out."""
    if not cfg.history:
        return None
    from genforge.finetune.sft import read_dialogues

    dialogues = read_dialogues(cfg.history)
    if cfg.model is not None:
        read_model_config(cfg.model)
    return dialogues


def calibrate_assistant(assistant: Assistant, val: list[tuple[str, str]], min_accuracy: float,
                        faq_precision: float) -> tuple[Thresholds, dict]:
    """Choose and set `assistant`'s thresholds from (text, label) validation rows: first from which intent
    probability the classifier picks the entry, then the hand-off and FAQ thresholds on the entries so picked.
    The out-of-scope model's view scales are re-taken on the in-scope validation questions (and saved)."""
    assistant.thresholds = Thresholds()  # retrieval alone, to compare the classifier against
    hits, intents, vectors = assistant.signals([t for t, _ in val])
    labels = np.array([label for _, label in val])
    if intents is not None and intents.log_distances is not None and (labels != OOS).sum() > 1:
        assistant.ood.scale = spread(intents.log_distances[labels != OOS])
        assistant.ood.save(assistant.folder)
        intents.oos = assistant.ood.score(intents.log_distances)
    retrieval_correct = np.array([bool(h) and h[0].passage.entry == y for h, y in zip(hits, labels, strict=True)])
    t_intent, routed_accuracy = math.inf, None
    if intents is not None:
        t_intent, routed_accuracy = calibrate_intent(intents.prob, np.array(intents.entry) == labels,
                                                     retrieval_correct, labels == OOS)
        assistant.thresholds = Thresholds(intent=t_intent)
        hits = [assistant.route(h, intents.entry[i], float(intents.prob[i]), vectors[i]) if h else h
                for i, h in enumerate(hits)]
    top = [h[0] if h else None for h in hits]
    confidence = np.array([h.cosine if h else -1.0 for h in top])
    correct = np.array([h is not None and h.passage.entry == y for h, y in zip(top, labels, strict=True)])
    is_faq = np.array([h is not None and h.passage.kind == "faq" for h in top])
    thresholds, report = calibrate(confidence, None if intents is None else intents.oos, correct, labels == OOS,
                                   min_accuracy, faq_precision, is_faq)
    assistant.thresholds = dataclasses.replace(thresholds, intent=t_intent)
    inscope = labels != OOS
    report = {**report, "thresholds": assistant.thresholds.to_dict(),
              "retrieval_accuracy": round(float(retrieval_correct[inscope].mean()), 4) if inscope.any() else None,
              "intent_routed_accuracy": None if routed_accuracy is None else round(routed_accuracy, 4)}
    return assistant.thresholds, report


def fit_ood(out: Path, classifier: tuple, encoder: Encoder) -> OutOfScope:
    """Fit the out-of-scope model (ood.py) on the intent classifier's training questions."""
    rows = read_questions(out / "work" / INTENTS)
    return fit_intent_ood(out, classifier, encoder, [t for t, _ in rows], [y for _, y in rows])


def recalibrate(cfg: CalibrateConfig) -> dict:
    """`genforge app support calibrate`: new thresholds for a built assistant from new validation questions
    (no retraining); support.json and calibration.json are replaced, calibrate.json records the run. An
    assistant built before this version's out-of-scope model gets it fitted here."""
    folder = Path(cfg.assistant)
    started = time.time()
    val = read_questions(cfg.val)
    if not any(label != OOS for _, label in val):
        raise DataError(f"{cfg.val} holds no in-scope question (labelled with a FAQ id): the answer thresholds are "
                        "chosen on them")
    if (folder / "intent").is_dir() and (folder / "work" / INTENTS).is_file() and not is_current(folder):
        from genforge.finetune.classifier import load_classifier

        fit_ood(folder, load_classifier(folder / "intent"), load_encoder(Path(read_meta(folder)["encoder"])))
    assistant = load_assistant(folder, generate=False)
    check_labels(cfg.val, val, assistant.index.entries)
    thresholds, report = calibrate_assistant(assistant, val, cfg.min_inscope_accuracy, cfg.faq_precision)
    write_json(folder / "calibration.json", report)
    write_json(folder / META, {**assistant.meta, "thresholds": thresholds.to_dict()})
    write_manifest(folder, "app.support.calibrate", cfg, started=started, inputs=[cfg.val],
                   metrics={k: v for k, v in report.items() if k != "thresholds"},
                   extra={"thresholds": thresholds.to_dict()}, filename="calibrate.json")
    _summary(folder, {}, report)
    return report


def clear_earlier_build(out: Path) -> None:
    """Drop what an earlier build wrote in `out` (a folder with support.json): the assistant is loaded from the
    folders present, so a classifier or chat model the new build does not make would be used with its index."""
    if not (out / META).is_file():
        return
    for name in ("index", "intent", "chat", "work"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (META, OOD_FILE, "calibration.json", "calibrate.json", "calibrate.config.yaml"):
        (out / name).unlink(missing_ok=True)


def build(cfg: BuildConfig) -> Path:
    import torch

    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    check_output(out, "app.support.build")
    started = time.time()
    passages = ingest(cfg.kb, cfg.chunk_chars, cfg.overlap)
    oos = [t for t, _ in read_questions(cfg.oos, labelled=False)] if cfg.oos else []
    if cfg.val:
        indexed, val, oos_train = passages, read_questions(cfg.val), oos
        check_labels(cfg.val, val, {p.entry for p in passages})
    else:
        indexed, val, oos_train = split_calibration(passages, oos)
    if not any(label != OOS for _, label in val):
        where = f"{cfg.val} holds" if cfg.val else "hash bucket 8 of the FAQ's question variants holds"
        raise DataError(f"no in-scope calibration questions: {where} none labelled with a FAQ id, and the answer "
                        "thresholds are chosen on them; give --val FILE (text, label; label = the FAQ id or "
                        f"'{OOS}') or FAQ entries with more question variants")
    dialogues = read_chat_inputs(cfg)
    encoder = load_encoder(cfg.encoder)
    if cfg.classify and cfg.intent_base is not None:
        read_model_config(cfg.intent_base)
    begin_output(out, "app.support.build")  # only now, with the inputs read: a bad one leaves an earlier assistant in --out whole
    clear_earlier_build(out)
    (out / "work").mkdir(exist_ok=True)
    index = build_index([Passage(**{**p.to_dict(), "id": i}) for i, p in enumerate(indexed)], encoder)
    index.save(out / "index")
    if dialogues is not None:  # before any training: SFT's own checks would come only after the intent classifier
        from genforge.apps.support.chatmodel import chat_model, prepare_chat  # and the pretraining

        prepare_chat(cfg, dialogues, index, indexed, out / "work")
    intent = train_intents(cfg, indexed, oos_train, cfg.intent_base or encoder.path, None if cfg.val else val)
    chat = None if dialogues is None else chat_model(cfg, out / "work")
    meta = {"encoder": str(encoder.path), "system": cfg.system, "prompt_passages": cfg.prompt_passages,
            "passage_chars": cfg.passage_chars, "thresholds": {}, "chat": chat is not None,
            "intent": intent is not None}
    write_json(out / META, meta)
    assistant = load_assistant(out, generate=False, finished=False)
    if assistant.classifier is not None:
        assistant.ood = fit_ood(out, assistant.classifier, encoder)
    thresholds, report = calibrate_assistant(assistant, val, cfg.min_inscope_accuracy, cfg.faq_precision)
    write_json(out / "calibration.json", report)
    write_json(out / META, {**meta, "thresholds": thresholds.to_dict()})
    counts = {"passages": len(indexed), "faq_entries": len({p.entry for p in indexed if p.kind == "faq"}),
              "doc_chunks": sum(p.kind == "doc" for p in indexed), "val_questions": len(val)}
    write_manifest(out, "app.support.build", cfg, started=started, inputs=kb_files(cfg.kb),
                   metrics={**counts, **{k: v for k, v in report.items() if k != "thresholds"}},
                   extra={"thresholds": thresholds.to_dict()})
    _summary(out, counts, report)
    return out


def _summary(out: Path, counts: dict, report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"support assistant: {out}")
    table.add_column("what")
    table.add_column("value")
    for key, value in {**counts, **{k: v for k, v in report.items() if k != "thresholds"},
                       **{f"threshold {k}": v for k, v in report["thresholds"].items()}}.items():
        table.add_row(key, str(value))
    Console().print(table)
