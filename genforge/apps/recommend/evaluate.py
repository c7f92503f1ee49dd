"""`genforge app recommend eval`: the recommender and the baselines on the held-out fold, in one run.

The build folder must have been built with --holdout: its manifest names the inputs, which are read and
split again here (the split is a pure function of "user:item"), so the evaluation needs nothing else.
Users are those with held-out items who also have training items (a user with no training item is a
cold-start user, a different question); their queries are their training interactions only (`fitted_only`),
so the held-out items are unseen by what is scored. Two rows come from the recommender: `genforge-lm`
(re-ranked by the language-model interest scorer; when the build has one) and `genforge-fast` (the fast
ranker alone); `default` names the one `recommend` and `serve` use (the build's validation chose it), and
the goals' ratios and `p50`/`p95` are that one's. Latency is timed one user at a time, as a server would answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.recommend import baselines
from genforge.apps.recommend.build import load_data
from genforge.apps.recommend.config import BuildConfig, EvalConfig
from genforge.apps.recommend.metrics import summary
from genforge.apps.recommend.recommender import load
from genforge.apps.recommend.store import STAGE
from genforge.artifacts import atomic_write_text, begin_output, read_manifest, write_json, write_manifest
from genforge.config import from_dict
from genforge.errors import ArtifactError, DataError

NON_TEXT = ("popular", "itemknn", "als")


def eval_users(heldout_users: list[str], heldout_items: list[str], known: dict[str, int], item_index: dict[str, int],
               limit: int) -> tuple[list[str], list[set[int]]]:
    relevant: dict[str, set[int]] = {}
    for u, i in zip(heldout_users, heldout_items, strict=True):
        if u in known:
            relevant.setdefault(u, set()).add(item_index[i])
    users = sorted(relevant, key=lambda u: hashlib.sha256(u.encode()).hexdigest())
    users = users[:limit] if limit else users
    return users, [relevant[u] for u in users]


def run_baselines(names: list[str], model: Any, users: list[str], k: int) -> dict[str, list[list[int]]]:
    from tqdm import tqdm

    rows = np.array([model.behaviour.user_index[u] for u in users])
    seen = model.behaviour.weights[rows]
    out = {}
    for name in tqdm(names, desc="baselines", unit="baseline"):
        t0 = time.time()
        fit = {"popular": lambda: baselines.popular(model.behaviour),
               "tfidf": lambda: baselines.tfidf(model.behaviour, model.items),
               "itemknn": lambda: baselines.itemknn(model.behaviour),
               "als": lambda: baselines.als(model.behaviour)}[name]
        scores = fit()
        lists = []
        for first in range(0, len(rows), 256):
            lists += baselines.top_k(scores(rows[first:first + 256]), seen[first:first + 256], k)
        out[name] = lists
        out[f"_{name}_seconds"] = round(time.time() - t0, 2)
    return out


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Write report.json/report.md/metrics.png to --out; returns the report."""
    from tqdm import tqdm

    manifest = read_manifest(cfg.model, stage=STAGE)
    build_cfg = from_dict(BuildConfig, manifest["config"])
    if not build_cfg.holdout:
        raise ArtifactError(f"{cfg.model} was built with --no-holdout: it has seen every interaction; rebuild "
                            "with --holdout to evaluate")
    missing = [p for p in (build_cfg.items, *build_cfg.interactions) if not Path(p).is_file()]
    if missing:  # builds before absolute paths were recorded name them relative to where the build ran
        raise DataError(f"{missing[0]}, an input of the build (recorded in {Path(cfg.model) / 'manifest.json'}), "
                        f"is not found from {Path.cwd()}: run eval where the build ran, or rebuild")
    items, _, heldout, _ = load_data(build_cfg)
    started = begin_output(cfg.out, "app.recommend.eval")
    model = load(cfg.model, scorer=True)  # both paths are measured; `default` is the build's choice
    users, relevant = eval_users(heldout.users, heldout.items, model.behaviour.user_index, model.item_index, cfg.users)
    if not users:
        raise DataError("no held-out interaction belongs to a user with training interactions")
    cold = set(np.flatnonzero(model.behaviour.popularity < cfg.cold_threshold).tolist())

    lists = run_baselines(list(cfg.baselines), model, users, cfg.k)
    with_lm = model.scorer is not None and model.full_ranker is not None
    full, fast, latency = [], [], {"lm": [], "fast": []}
    t0 = time.time()
    for n, user in enumerate(tqdm(users, desc="genforge", unit="user")):
        t = time.perf_counter()
        ranked = model.rank(model.query_for_user(user, fitted_only=True), cfg.k, use_scorer=with_lm)
        if n < cfg.latency_users:
            latency["lm" if with_lm else "fast"].append(time.perf_counter() - t)
        full.append(ranked["final"])
        fast.append(ranked["fast"])
    seconds = time.time() - t0
    for user in users[:cfg.latency_users] if with_lm else []:
        t = time.perf_counter()
        model.rank(model.query_for_user(user, fitted_only=True), cfg.k, use_scorer=False)
        latency["fast"].append(time.perf_counter() - t)

    methods = {"genforge-lm": full, "genforge-fast": fast} if with_lm else {"genforge-fast": fast}
    methods |= {name: lists[name] for name in cfg.baselines}
    common = {"k": cfg.k, "catalogue": len(items.ids), "popularity": model.behaviour.popularity,
              "users": len(model.behaviour.users), "cold": cold}
    table = {name: summary(ls, relevant, **common) for name, ls in methods.items()}
    default = "lm" if with_lm and manifest["metrics"].get("use_scorer", True) else "fast"
    ours = f"genforge-{default}"
    best = max((n for n in table if n in NON_TEXT), key=lambda n: table[n][f"ndcg@{cfg.k}"], default=None)
    report = {"users": len(users), "k": cfg.k, "cold_items": len(cold), "methods": table, "default": ours,
              "latency_ms": {"p50": _ms(latency[default], 50), "p95": _ms(latency[default], 95),
                             **{f"{path}_p{q}": _ms(latency[path], q) for path in latency for q in (50, 95)}},
              "genforge_seconds": round(seconds, 1),
              "baseline_seconds": {n: lists[f"_{n}_seconds"] for n in cfg.baselines}}
    if best:
        report["ndcg_vs_best_non_text"] = {"baseline": best, "ratio": _ratio(table[ours][f"ndcg@{cfg.k}"],
                                                                               table[best][f"ndcg@{cfg.k}"])}
    if "popular" in table and table[ours].get(f"cold_recall@{cfg.k}") is not None:  # undefined without cold users
        report["cold_recall_vs_popular"] = _ratio(table[ours][f"cold_recall@{cfg.k}"],
                                                  table["popular"][f"cold_recall@{cfg.k}"])
    out = Path(cfg.out)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))
    plot(table, cfg.k, out / "metrics.png")
    write_manifest(out, "app.recommend.eval", cfg, parent=manifest, started=started,
                   metrics={"ndcg": table[ours][f"ndcg@{cfg.k}"], "recall": table[ours][f"recall@{cfg.k}"],
                            "p95_ms": report["latency_ms"]["p95"]})
    print_table(report)
    return report


def _ms(values: list[float], q: int) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def _times(ratio: float | None) -> str:
    """A ratio for people: None means the baseline scored 0 (any recall beats it; no finite ratio)."""
    return "n/a (the baseline scores 0)" if ratio is None else f"x{ratio}"


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


def cell(value: float | None) -> str:
    """A metric for a table: None (undefined, as cold-start recall without cold users) shows as n/a."""
    return "n/a" if value is None else f"{value:.4f}"


def markdown(report: dict[str, Any]) -> str:
    k = report["k"]
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", "coverage", "novelty", f"cold_recall@{k}"]
    lines = [f"# Recommendation evaluation ({report['users']} users, {report['cold_items']} cold items)", "",
             f"`recommend` and `serve` use {report['default']} (chosen by the build's validation).", "",
             "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(cell(m.get(c)) for c in cols) + " |")
    lines += ["", f"latency per user (ms): {json.dumps(report['latency_ms'])}"]
    if "ndcg_vs_best_non_text" in report:
        r = report["ndcg_vs_best_non_text"]
        lines.append(f"NDCG@{k} vs best non-text baseline ({r['baseline']}): x{r['ratio']}")
    if "cold_recall_vs_popular" in report:
        lines.append(f"cold-start Recall@{k} vs popularity: {_times(report['cold_recall_vs_popular'])}")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, dict[str, float]], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [c for c in (f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", f"cold_recall@{k}")
            if all(m.get(c) is not None for m in table.values())]  # an undefined metric has no bar
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(table)
    for j, (name, m) in enumerate(table.items()):
        ax.bar(np.arange(len(keys)) + j * width, [m[c] for c in keys], width, label=name)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    ax.legend()
    ax.set_title("held-out ranking quality")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    k = report["k"]
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", "coverage", "novelty", f"cold_recall@{k}"]
    table = Table(title=f"app recommend eval ({report['users']} users)")
    table.add_column("method")
    for c in cols:
        table.add_column(c)
    for name, m in report["methods"].items():
        table.add_row(name, *(cell(m.get(c)) for c in cols))
    console = Console(stderr=True)
    console.print(table)
    console.print(f"default: {report['default']}; latency ms: {report['latency_ms']}; NDCG vs best non-text: "
                  f"{report.get('ndcg_vs_best_non_text')}; cold recall vs popular: "
                  f"{_times(report['cold_recall_vs_popular']) if 'cold_recall_vs_popular' in report else 'n/a'}")
