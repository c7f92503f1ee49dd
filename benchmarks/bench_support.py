"""The support assistant on the shared data, against TF-IDF + logistic regression with the same calibration.

1. Bitext customer support (27 intents): `from-bitext` -> FAQ of canonical answers + conversations; the
   assistant is built (hybrid index, MiniLM intent/oos classifier, `small` decoder pretrained + LoRA SFT,
   thresholds calibrated on val = bucket-8 paraphrases + CLINC oos_val) and evaluated on the held-out
   paraphrases (bucket 9) + CLINC oos_test: Hit@1/5, MRR, nDCG@10, answer accuracy, hand-off P/R/F1,
   latency p50/p95 of FAQ answers; then the latency of generated answers (policy forced to generate).
2. CLINC150 (150 intents + out-of-scope): the FAQ is the train split (one entry per intent), no chat model;
   in-scope accuracy and out-of-scope hand-off F1 on the test split, thresholds calibrated on val.
Baseline on both: TF-IDF word 1-2 grams + logistic regression on the same training questions (+ 'oos' class
from oos_train), its max in-scope probability and P(oos) calibrated by the same `policy.calibrate`. Rasa's
DIET + FallbackClassifier (the issue's anchor) needs Python < 3.11 and TensorFlow: not run here.
Goals (issue #10): bitext Hit@1 >= 0.90; CLINC hand-off F1 >= 0.85 at in-scope accuracy >= 0.93;
p95 < 1.5 s for FAQ answers and < 5 s for generated ones. Per-question work runs on 1 torch thread.

    .venv/bin/python benchmarks/bench_support.py            # ~45-75 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_support.py --quick    # ~10-20 min: subsets, minutes-capped training (a smoke run)
    add --work DIR to keep the assistants, and --reuse to re-evaluate them without rebuilding
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from genforge.apps.support.assistant import load_assistant  # noqa: E402
from genforge.apps.support.bitext import from_bitext  # noqa: E402
from genforge.apps.support.build import build, read_questions, recalibrate  # noqa: E402
from genforge.apps.support.config import BuildConfig, CalibrateConfig, FromBitextConfig  # noqa: E402
from genforge.apps.support.evaluate import evaluate_assistant, percentiles  # noqa: E402
from genforge.apps.support.policy import OOS, calibrate, f1  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def subset(rows: list, n: int) -> list:
    """n rows evenly spread over `rows` (keeps the mix of intents); all of them when n is 0."""
    return rows if not n or len(rows) <= n else [rows[i] for i in np.linspace(0, len(rows) - 1, n).astype(int)]


def write_csv(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def baseline(train: list[tuple[str, str]], val: list[tuple[str, str]], test: list[tuple[str, str]],
             min_accuracy: float) -> dict:
    """TF-IDF + LR with hand-off thresholds from the same calibration as the assistant."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(max_iter=2000, C=10).fit(vec.fit_transform([t for t, _ in train]), [y for _, y in train])
    seconds = time.perf_counter() - t0
    labels = list(clf.classes_)
    inscope = [i for i, y in enumerate(labels) if y != OOS]

    def signals(rows):
        probs = clf.predict_proba(vec.transform([t for t, _ in rows]))
        top = probs[:, inscope].argmax(1)
        pred = np.array([labels[inscope[i]] for i in top])
        conf = probs[:, inscope].max(1)
        p_oos = probs[:, labels.index(OOS)] if OOS in labels else 1 - conf
        gold = np.array([y for _, y in rows])
        return conf, p_oos, pred == gold, gold == OOS

    th, _ = calibrate(*signals(val), min_accuracy, 0.95)
    conf, p_oos, correct, is_oos = signals(test)
    handoff = (conf < th.handoff_confidence) | (p_oos >= th.oos)
    p, r, f = f1(handoff, is_oos)
    latency = []
    for text, _ in test[:300]:
        t = time.perf_counter()
        clf.predict_proba(vec.transform([text]))
        latency.append(time.perf_counter() - t)
    return {"hit@1": float(correct[~is_oos].mean()), "answer_accuracy": float((correct & ~handoff)[~is_oos].mean()),
            "handoff_precision": p, "handoff_recall": r, "handoff_f1": f, "train_seconds": seconds,
            "latency": percentiles(latency)}


def _cell(value: object, width: int) -> str:
    return f"{value:{width}.4f}" if isinstance(value, float) else f"{'-' if value is None else value:>{width}}"


def show(title: str, ours: dict, base: dict, keys: list[str]) -> None:
    print(f"\n{title}")
    print(f"  {'metric':<22}{'genforge':>10}{'TF-IDF+LR':>11}{'ratio':>8}")
    for key in keys:
        a, b = ours.get(key), base.get(key)
        ratio = a / b if isinstance(a, float) and isinstance(b, float) and b else None
        print(f"  {key:<22}{_cell(a, 10)}{_cell(b, 11)}{_cell(ratio, 8)}")


def latency_line(name: str, p: dict) -> str:
    return f"  {name:<28} n={p['n']:<5} p50={p.get('p50', 0):.3f}s p95={p.get('p95', 0):.3f}s"


def run_bitext(work: Path, args: argparse.Namespace) -> None:
    import torch

    from_bitext(FromBitextConfig(data=SHARED, out=work / "bitext", max_history=args.history))
    data = work / "bitext"
    test = read_questions(data / "test.csv")
    test = subset([r for r in test if r[1] != OOS], args.test) + subset([r for r in test if r[1] == OOS], args.test)
    t0 = time.perf_counter()
    out = work / "bitext-assistant"
    reused = args.reuse and (out / "manifest.json").is_file()
    out = out if reused else build(BuildConfig(kb=[data / "faq.csv"], history=data / "history.jsonl", val=data / "val.csv",
        oos=data / "oos.csv", out=out, pretrain_minutes=args.pretrain_minutes, sft_steps=args.sft_steps,
        sft_minutes=args.sft_minutes, classify_steps=args.classify_steps))
    if reused:  # the calibration is cheap and may have changed since the build
        recalibrate(CalibrateConfig(assistant=out, val=data / "val.csv"))
    build_seconds = time.perf_counter() - t0
    torch.set_num_threads(1)
    assistant = load_assistant(out)
    ours, _ = evaluate_assistant(assistant, test, args.max_new_tokens)
    faq_rows = read_questions(data / "faq.csv")  # (question, id)
    oos_rows = [(t, OOS) for t, _ in read_questions(data / "oos.csv", labelled=False)]
    base = baseline(faq_rows + oos_rows, read_questions(data / "val.csv"), test, 0.93)
    assistant.thresholds = dataclasses.replace(assistant.thresholds, handoff_confidence=-math.inf, oos=math.inf,
                                               faq=math.inf)  # every answer generated
    generated, seconds = [], []
    for text, _ in subset([r for r in test if r[1] != OOS], args.generate):
        answer = assistant.answer([{"role": "user", "content": text}], args.max_new_tokens)
        generated.append((text, answer.text))
        seconds.append(answer.seconds)
    calibration = json.loads((out / "calibration.json").read_text())
    print(f"\n== Bitext customer support: {len(faq_rows)} FAQ variants / 27 answers, {len(test)} test questions "
          f"({sum(r[1] != OOS for r in test)} paraphrases + {sum(r[1] == OOS for r in test)} CLINC oos); "
          f"build {'reused' if reused else f'{build_seconds:.0f}s'} ==")
    print(f"  calibrated thresholds {calibration['thresholds']} (val hand-off F1 {calibration['handoff_f1']})")
    show("retrieval / answers / hand-off", ours, base, ["hit@1", "hit@5", "mrr@10", "ndcg@10", "answer_accuracy",
                                                       "handoff_precision", "handoff_recall", "handoff_f1"])
    print("latency (1 thread)")
    for action, p in ours["latency"].items():
        print(latency_line(f"genforge {action}", p))
    print(latency_line("genforge generated (forced)", percentiles(seconds)))
    print(latency_line("TF-IDF+LR", base["latency"]))
    for text, answer in generated[:3]:
        print(f"\n  Q: {text}\n  A (generated, small): {answer[:300]}")


def run_clinc(work: Path, args: argparse.Namespace) -> None:
    import torch

    clinc = json.loads((SHARED / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    intents = sorted({y for _, y in clinc["train"]})[: args.clinc_intents or None]
    keep = set(intents)
    folder = work / "clinc"
    folder.mkdir(parents=True, exist_ok=True)
    train = [(t, y) for t, y in clinc["train"] if y in keep]
    write_csv(folder / "faq.csv", ["id", "question", "answer"], [(y, t, f"[{y}]") for t, y in train])
    val = [(t, y) for t, y in clinc["val"] if y in keep] + [(t, OOS) for t, _ in clinc["oos_val"]]
    test = [(t, y) for t, y in clinc["test"] if y in keep] + [(t, OOS) for t, _ in clinc["oos_test"]]
    write_csv(folder / "val.csv", ["text", "label"], val)
    write_csv(folder / "oos.csv", ["text"], [(t,) for t, _ in clinc["oos_train"]])
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    out = work / "clinc-assistant"
    reused = args.reuse and (out / "manifest.json").is_file()
    out = out if reused else build(BuildConfig(
        kb=[folder / "faq.csv"], val=folder / "val.csv", oos=folder / "oos.csv", out=out,
        classify_steps=args.clinc_steps))
    if reused:
        recalibrate(CalibrateConfig(assistant=out, val=folder / "val.csv"))
    build_seconds = time.perf_counter() - t0
    torch.set_num_threads(1)
    ours, _ = evaluate_assistant(load_assistant(out), test)
    base = baseline(train + [(t, OOS) for t, _ in clinc["oos_train"]], val, test, 0.93)
    calibration = json.loads((out / "calibration.json").read_text())
    print(f"\n== CLINC150: {len(intents)} intents, {len(train)} train, test {len(test)} "
          f"({sum(y != OOS for _, y in test)} in-scope + {sum(y == OOS for _, y in test)} oos); build {'reused' if reused else f'{build_seconds:.0f}s'} ==")
    print(f"  calibrated thresholds {calibration['thresholds']} (val: in-scope acc {calibration['inscope_accuracy']}, "
          f"hand-off F1 {calibration['handoff_f1']})")
    show("in-scope accuracy / hand-off", {**ours, "inscope_accuracy": ours["answer_accuracy"]},
         {**base, "inscope_accuracy": base["answer_accuracy"]},
         ["hit@1", "inscope_accuracy", "handoff_precision", "handoff_recall", "handoff_f1"])
    for action, p in ours["latency"].items():
        print(latency_line(f"genforge {action}", p))
    print(latency_line("TF-IDF+LR", base["latency"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="subsets and short training (a smoke run)")
    parser.add_argument("--work", type=Path, default=None, help="keep the built assistants here (default: temp)")
    parser.add_argument("--only", choices=("bitext", "clinc"), default=None)
    parser.add_argument("--reuse", action="store_true", help="with --work: evaluate assistants already built there")
    args = parser.parse_args()
    full = {"history": 0, "test": 0, "pretrain_minutes": 5.0, "sft_steps": 400, "sft_minutes": 8.0,
            "classify_steps": 300, "generate": 30, "max_new_tokens": 120, "clinc_intents": 0, "clinc_steps": 3000}
    quick = {"history": 600, "test": 150, "pretrain_minutes": 0.5, "sft_steps": 15, "sft_minutes": 1.0,
             "classify_steps": 40, "generate": 5, "max_new_tokens": 48, "clinc_intents": 15, "clinc_steps": 60}
    for key, value in (quick if args.quick else full).items():
        setattr(args, key, value)
    if not (SHARED / "bitext_customer_support").is_dir():
        sys.exit(f"shared data not found at {SHARED}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if args.only in (None, "bitext"):
            run_bitext(work, args)
        if args.only in (None, "clinc"):
            run_clinc(work, args)


if __name__ == "__main__":
    main()
