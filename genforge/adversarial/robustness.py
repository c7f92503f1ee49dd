"""`genforge robustness eval`: attack a classifier with each recipe and report how well it holds.

The output folder holds `report.json` (clean accuracy; per attack: accuracy under attack, success rate
over the examples the model got right, average words (Chinese: characters) and characters changed by
the successful attacks, average queries, five adversarial examples), `robustness.png` (accuracies as
bars), `adversarial_<attack>.jsonl` (every attacked example, e.g. to inspect or to train on) and the
manifest (stage "robustness", parent: the classifier's manifest), written last.

Attack runs are long, so they resume: each finished example is kept as soon as it is known and
`--resume` continues an interrupted run with the same settings (see `genforge.adversarial.progress`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from genforge.adversarial.attacks import AttackResult, Budget, Recipe, Victim, attack_example, build_recipe
from genforge.adversarial.config import RobustnessConfig
from genforge.adversarial.neighbours import default_encoder
from genforge.adversarial.progress import Progress, fingerprint, open_progress
from genforge.artifacts import (
    MANIFEST,
    atomic_open,
    begin_output,
    read_manifest,
    write_json,
    write_jsonl,
    write_manifest,
)
from genforge.errors import ConfigError, DataError

REPORT = "report.json"
FIGURE = "robustness.png"


def read_examples(cfg: RobustnessConfig, labels: list[str]) -> list[tuple[str, int]]:
    """(text, label index) of a seeded sample of `cfg.max_examples` labelled texts, in file order."""
    from genforge.finetune.data import read_labelled

    examples = read_labelled(cfg.data, cfg.text_field, cfg.label_field)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({labs[0] for _, labs in examples} - set(index))
    if unknown:
        raise DataError(f"{cfg.data}: labels the classifier does not know: {unknown[:5]} "
                        f"(it knows {', '.join(labels)})")
    if cfg.max_examples and len(examples) > cfg.max_examples:
        keep = sorted(random.Random(cfg.seed).sample(range(len(examples)), cfg.max_examples))
        examples = [examples[i] for i in keep]
    return [(text, index[labs[0]]) for text, labs in examples]


def summarize(results: list[AttackResult], labels: list[str], seconds: float) -> dict[str, Any]:
    attacked = [r for r in results if r.status != "skipped"]
    won = [r for r in attacked if r.status == "succeeded"]

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), 4) if values else 0.0

    return {
        "accuracy": sum(r.prediction == r.label for r in results) / len(results),
        "success_rate": len(won) / len(attacked) if attacked else 0.0,
        "attacked": len(attacked), "succeeded": len(won),
        "avg_words_changed": mean([r.units_changed for r in won]),
        "avg_chars_changed": mean([r.chars_changed for r in won]),
        "avg_changed_ratio": mean([r.units_changed / max(1, r.units) for r in won]),
        "avg_queries": mean([r.queries for r in attacked]),
        "seconds": round(seconds, 2),
        "examples": [{"text": r.text, "adversarial": r.adversarial, "label": labels[r.label],
                      "prediction": labels[r.prediction]} for r in won[:5]],
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["clean", *report["attacks"]]
    values = [report["clean_accuracy"], *(a["accuracy"] for a in report["attacks"].values())]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6))
    bars = ax.bar(names, values, color=["#4c72b0"] + ["#dd8452"] * (len(names) - 1))
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title(f"robustness of {Path(report['model']).name} ({report['examples']} texts)")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"robustness of {report['model']} on {report['examples']} texts "
                        f"(clean accuracy {report['clean_accuracy']:.4f})")
    for col in ("attack", "accuracy", "success rate", "words changed", "chars changed", "queries", "seconds"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    for name, a in report["attacks"].items():
        table.add_row(name, f"{a['accuracy']:.4f}", f"{a['success_rate']:.4f}", f"{a['avg_words_changed']:.2f}",
                      f"{a['avg_chars_changed']:.2f}", f"{a['avg_queries']:.1f}", f"{a['seconds']:.1f}")
    Console(stderr=True).print(table)


def attack_all(name: str, examples: list[tuple[str, int]], victim: Victim, recipe: Recipe, budget: Budget,
               progress: Progress) -> tuple[list[AttackResult], float]:
    """(the results of every example, the attack seconds), going on after the examples an interrupted session
    finished; each result is kept in the partial file as soon as it is known."""
    partial = progress.partials.get(name)
    results, seconds = (list(partial.results), partial.seconds) if partial else ([], 0.0)
    with progress.appending(name) as add:
        for text, label in tqdm(examples[len(results):], desc=name, unit="text", dynamic_ncols=True,
                                initial=len(results), total=len(examples)):
            t0 = time.perf_counter()
            result = attack_example(text, label, victim, recipe, budget)
            took = time.perf_counter() - t0
            add(result, took)
            results.append(result)
            seconds += took
    return results, seconds


def robustness_eval(cfg: RobustnessConfig) -> dict[str, Any]:
    """Attack `cfg.model` on `cfg.data` with each `cfg.attack` recipe; return the report (also report.json)."""
    from genforge.adversarial.perturb import input_embeddings
    from genforge.finetune.classifier import load_classifier, predict_probs
    from genforge.finetune.run import runs_on
    from genforge.models.load import check_finished_run

    check_finished_run(cfg.model)
    model, tokenizer, info = load_classifier(cfg.model)
    if info["multi_label"]:
        raise ConfigError(f"{cfg.model} is a multi-label classifier; the attacks need a single-label one")
    examples = read_examples(cfg, info["labels"])
    names = list(dict.fromkeys(cfg.attack))
    progress = open_progress(cfg, fingerprint(cfg, names), examples)
    budget = Budget(cfg.max_queries, cfg.max_ratio, cfg.min_similarity, cfg.candidates, cfg.seed)
    own = cfg.synonym_source == "model"
    recipes = {name: build_recipe(name, budget, tokenizer=tokenizer, embeddings=input_embeddings(model) if own else None,
                                  encoder=cfg.encoder or default_encoder())
               for name in names if name not in progress.finished}  # a bad --encoder fails before the folder is touched
    started = begin_output(cfg.out, "robustness")
    progress.begin()
    model.to(runs_on(cfg.model))
    texts, gold = [t for t, _ in examples], np.array([y for _, y in examples])
    clean = predict_probs(model, tokenizer, texts, seq_len=info["seq_len"], multi_label=False,
                          batch_size=cfg.batch_size).argmax(1)
    victim = Victim(model, tokenizer, info["seq_len"], cfg.batch_size)
    report: dict[str, Any] = {
        "model": str(cfg.model), "data": str(cfg.data), "examples": len(examples),
        "clean_accuracy": float((clean == gold).mean()), "seed": cfg.seed,
        "corrects_typos": model.typos is not None,  # the attacks then face the classifier behind its corrector
        "budget": {k: v for k, v in dataclasses.asdict(budget).items() if k != "seed"}, "attacks": {}}
    for name in names:
        if name in progress.finished:
            report["attacks"][name] = progress.finished[name]
            continue
        results, seconds = attack_all(name, examples, victim, recipes[name], budget, progress)
        report["attacks"][name] = summarize(results, info["labels"], seconds)
        write_jsonl(cfg.out / f"adversarial_{name}.jsonl",
                    (dataclasses.asdict(r) | {"label": info["labels"][r.label],
                                              "prediction": info["labels"][r.prediction]} for r in results))
        progress.finish(name, report["attacks"][name])
    write_json(cfg.out / REPORT, report)
    plot(report, cfg.out / FIGURE)
    print_table(report)
    metrics = {"clean_accuracy": report["clean_accuracy"], "examples": len(examples)}
    for name, a in report["attacks"].items():
        metrics |= {f"{name}_accuracy": a["accuracy"], f"{name}_success_rate": a["success_rate"]}
    parent = read_manifest(cfg.model) if (Path(cfg.model) / MANIFEST).is_file() else None
    write_manifest(cfg.out, "robustness", cfg, inputs=[cfg.data], parent=parent, metrics=metrics, started=started)
    progress.end()
    return report
