"""`genforge ab report`: per-variant metrics of an A/B experiment, its statistics and a recommendation.

Per variant, from the stored responses the experiment assigned and their feedback: impressions,
feedback rate (responses rated / impressions), positive rate (rated up or 4-5 stars / rated; a response's
latest rating counts), latency (request to last token) and completion tokens. Against the control (the
--model arm): a z-test of the positive rates and the Bayesian probability to beat it (Beta posteriors,
Monte Carlo). Users, not ratings, are the unit: the assignment is per user, and one user's ratings go
together, so a heavy user who rates one arm a hundred times is one observation of a ratio, not a hundred
independent ones. The variance of each rate is the delta method's for a ratio of per-user sums (Deng et al.
2018, "Applying the Delta Method in Metric Analytics"); the posteriors count the ratings' effective number
under that variance (with one rating per user, both reduce to the usual binomial ones). A response without
a user is its own unit. A sample-ratio-mismatch check compares the users each
variant got with what the weights in force at the time expected (chi-square; alert at p < 0.001: the
assignment, not the models, would explain any difference).
Recommendation: stop on a mismatch; promote a variant that beats the control with probability >= 0.95,
z-test p < 0.05 and at least MIN_FEEDBACK ratings per arm; stop a variant that loses the same way; else
keep running.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.db import AbWeights, Feedback, StoredResponse

SRM_ALERT = 0.001
MIN_FEEDBACK = 30
WIN = 0.95
DRAWS = 100_000


def _load(engine: Engine, experiment: str) -> tuple[list[StoredResponse], dict[str, bool], dict[int, dict]]:
    with Session(engine) as session:
        # Only the responses the experiment assigned (they carry the weights in force): those served under
        # the name before the experiment started, or after it ended, are no arm's impressions.
        assigned = (StoredResponse.model == experiment, StoredResponse.weights_id.is_not(None))
        responses = list(session.scalars(select(StoredResponse).where(*assigned)))
        verdicts: dict[str, bool] = {}
        query = (select(Feedback.response_id, Feedback.positive).join(StoredResponse)
                 .where(*assigned, Feedback.positive.is_not(None)).order_by(Feedback.id))
        for rid, positive in session.execute(query):
            verdicts[rid] = bool(positive)  # the latest rating wins
        weights = {row.id: json.loads(row.weights) for row in
                   session.scalars(select(AbWeights).where(AbWeights.experiment == experiment).order_by(AbWeights.id))}
    return responses, verdicts, weights


def ratio_variance(positives: np.ndarray, ratings: np.ndarray) -> float:
    """Variance of sum(positives) / sum(ratings) over units (users) with these per-unit counts, by the delta
    method. Never below the binomial variance of independent ratings (a smoothed rate keeps an all-up or
    all-down arm from claiming zero); a single unit is one observation whatever its number of ratings."""
    total = ratings.sum()
    smoothed = (positives.sum() + 0.5) / (total + 1)
    if len(ratings) < 2:
        return float(smoothed * (1 - smoothed))
    rate = positives.sum() / total
    cov = np.cov(positives, ratings)  # sample (co)variances over units
    delta = (cov[0, 0] - 2 * rate * cov[0, 1] + rate**2 * cov[1, 1]) / (len(ratings) * ratings.mean() ** 2)
    return float(max(delta, smoothed * (1 - smoothed) / total))


def z_test(rate1: float, var1: float, rate2: float, var2: float) -> tuple[float, float]:
    """(z, two-sided p) of H0: rate1 == rate2, each rate with its own variance; (0, 1) when undefined."""
    from scipy.stats import norm

    se = (var1 + var2) ** 0.5
    if se == 0:
        return 0.0, 1.0
    z = (rate2 - rate1) / se
    return float(z), float(2 * norm.sf(abs(z)))


def effective_counts(rate: float, var: float, ratings: int) -> tuple[float, float]:
    """(positives, ratings) of the binomial sample as informative as a rate with this variance: clustered
    ratings count as fewer, never as more than there are."""
    if not ratings:
        return 0.0, 0.0
    smoothed = (rate * ratings + 0.5) / (ratings + 1)
    n = min(ratings, smoothed * (1 - smoothed) / var)
    return rate * n, n


def prob_to_beat(x1: float, n1: float, x2: float, n2: float, seed: int = 0) -> float:
    """P(rate 2 > rate 1) under Beta(1 + successes, 1 + failures) posteriors."""
    rng = np.random.default_rng(seed)
    a = rng.beta(1 + x1, 1 + n1 - x1, DRAWS)
    b = rng.beta(1 + x2, 1 + n2 - x2, DRAWS)
    return float((b > a).mean())


def srm(responses: list[StoredResponse], weights: dict[int, dict]) -> dict[str, Any]:
    """Chi-square of the units (users; a response without user is its own unit) each variant got against
    the counts the weights of each period expected."""
    from scipy.stats import chi2

    units: dict[int, dict[str, str]] = defaultdict(dict)
    for r in responses:
        if r.weights_id in weights:
            units[r.weights_id].setdefault(r.user or r.id, r.variant)
    observed: dict[str, float] = defaultdict(float)
    expected: dict[str, float] = defaultdict(float)
    for wid, assigned in units.items():
        total = sum(weights[wid].values())
        for arm, w in weights[wid].items():
            expected[arm] += len(assigned) * w / total
        for variant in assigned.values():
            observed[variant] += 1
    arms = [a for a in expected if expected[a] > 0]
    stat = sum((observed[a] - expected[a]) ** 2 / expected[a] for a in arms)
    stray = sum(observed[a] for a in observed if expected.get(a, 0) == 0)  # users sent where weight 0
    p = float(chi2.sf(stat, len(arms) - 1)) if len(arms) > 1 else 1.0
    if stray:
        p = 0.0
    return {"chi2": float(stat), "p": p, "alert": bool(p < SRM_ALERT and sum(observed.values()) > 0),
            "observed": dict(observed), "expected": dict(expected)}


def report(engine: Engine, experiment: str) -> dict[str, Any]:
    """Everything `genforge ab report` prints, as a dict (the dashboard's JSON too)."""
    responses, verdicts, weights = _load(engine, experiment)
    first = weights[min(weights)] if weights else {}
    current = weights[max(weights)] if weights else {}
    arms = list(dict.fromkeys([*first, *current, *(r.variant for r in responses)]))
    control = next(iter(first), arms[0] if arms else None)
    rows = {}
    for arm in arms:
        mine = [r for r in responses if r.variant == arm]
        done = [r for r in mine if r.status == 200]
        rated = [verdicts[r.id] for r in mine if r.id in verdicts]
        units: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # user -> [positive, rated]
        for r in mine:
            if r.id in verdicts:
                units[r.user or r.id][0] += verdicts[r.id]
                units[r.user or r.id][1] += 1
        per_unit = np.array(list(units.values()), dtype=float).reshape(-1, 2)
        latency = np.array([r.latency for r in done]) if done else np.zeros(0)
        ttft = np.array([r.ttft for r in done if r.ttft is not None])
        rows[arm] = {
            "variant": arm, "weight": current.get(arm, 0.0), "impressions": len(mine), "feedback": len(rated),
            "positive": sum(rated), "feedback_rate": len(rated) / len(mine) if mine else 0.0,
            "positive_rate": sum(rated) / len(rated) if rated else 0.0, "raters": len(units),
            "positive_rate_var": ratio_variance(per_unit[:, 0], per_unit[:, 1]) if rated else 0.0,
            "latency_mean": float(latency.mean()) if latency.size else None,
            "latency_p50": float(np.percentile(latency, 50)) if latency.size else None,
            "latency_p95": float(np.percentile(latency, 95)) if latency.size else None,
            "ttft_p50": float(np.percentile(ttft, 50)) if ttft.size else None,
            "tokens_mean": float(np.mean([r.completion_tokens for r in done])) if done else None}
    for arm, row in rows.items():
        if arm == control or control is None:
            row.update(z=None, p_value=None, prob_beat_control=None)
            continue
        c = rows[control]
        z, p = (z_test(c["positive_rate"], c["positive_rate_var"], row["positive_rate"], row["positive_rate_var"])
                if c["feedback"] and row["feedback"] else (0.0, 1.0))
        counts = [effective_counts(r["positive_rate"], r["positive_rate_var"], r["feedback"]) for r in (c, row)]
        row.update(z=z, p_value=p, prob_beat_control=prob_to_beat(*counts[0], *counts[1]))
    mismatch = srm(responses, weights)
    return {"experiment": experiment, "control": control, "weights": current, "variants": list(rows.values()),
            "srm": mismatch, "recommendation": recommend(rows, control, mismatch)}


def recommend(rows: dict[str, dict], control: str | None, mismatch: dict[str, Any]) -> dict[str, str]:
    if mismatch["alert"]:
        return {"action": "stop", "why": f"sample ratio mismatch (chi-square p = {mismatch['p']:.2g} < {SRM_ALERT}): "
                                         "the assignment is broken, the results cannot be trusted"}
    enough = all(r["feedback"] >= MIN_FEEDBACK for r in rows.values())
    challengers = [r for r in rows.values() if r["variant"] != control]
    if not challengers:
        return {"action": "keep", "why": "no variant to compare with the control"}
    best = max(challengers, key=lambda r: r["prob_beat_control"])
    worst = min(challengers, key=lambda r: r["prob_beat_control"])
    if enough and best["prob_beat_control"] >= WIN and best["p_value"] < 0.05:
        return {"action": "promote", "variant": best["variant"],
                "why": f"{best['variant']} beats {control} with probability {best['prob_beat_control']:.3f} "
                       f"(z-test p = {best['p_value']:.2g})"}
    if enough and worst["prob_beat_control"] <= 1 - WIN and worst["p_value"] < 0.05:
        return {"action": "stop", "variant": worst["variant"],
                "why": f"{worst['variant']} loses to {control} (probability to beat {worst['prob_beat_control']:.3f}, "
                       f"z-test p = {worst['p_value']:.2g})"}
    need = "" if enough else f"; every arm needs {MIN_FEEDBACK} ratings"
    return {"action": "keep", "why": f"no significant difference yet{need}"}


def plot(rep: dict[str, Any], path: Path) -> None:
    """report.png: impressions against the expected share, positive rate with 95% intervals, latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep["variants"]
    names = [r["variant"] for r in rows]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].bar(x, [r["impressions"] for r in rows], color="tab:blue", label="responses")
    axes[0].plot(x, [rep["srm"]["expected"].get(n, 0) for n in names], "k_", markersize=30, mew=2,
                 label="expected users")
    axes[0].plot(x, [rep["srm"]["observed"].get(n, 0) for n in names], "o", color="tab:orange", label="users")
    axes[0].set_title(f"traffic (SRM p = {rep['srm']['p']:.3g})")
    axes[0].legend(fontsize=8)
    rates = np.array([r["positive_rate"] for r in rows])
    err = 1.96 * np.sqrt([r["positive_rate_var"] for r in rows])
    axes[1].bar(x, rates, yerr=[np.minimum(err, rates), np.minimum(err, 1 - rates)], capsize=6, color="tab:green")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("positive rate (95% interval)")
    for i, r in enumerate(rows):
        axes[1].text(i, 0.02, f"n={r['feedback']} ({r['raters']} users)", ha="center", fontsize=8)
    axes[2].bar(x - 0.2, [r["latency_p50"] or 0 for r in rows], 0.4, label="p50")
    axes[2].bar(x + 0.2, [r["latency_p95"] or 0 for r in rows], 0.4, label="p95")
    axes[2].set_title("latency (s)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, names)
    fig.suptitle(f"A/B {rep['experiment']}: {rep['recommendation']['action']} - {rep['recommendation']['why']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_out(out: Path | None) -> None:
    """Refuse an --out that cannot become a folder before the report is computed and printed, not after."""
    if out is None:
        return
    out = Path(out).expanduser().absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file; give a folder for report.json and report.png")


def run_report(cfg: Any) -> dict[str, Any]:
    """`genforge ab report`: the table, the recommendation, and report.json/report.png under --out."""
    from rich.console import Console
    from rich.table import Table

    from genforge.artifacts import write_json
    from genforge.serve.ab import pick_experiment
    from genforge.serve.config import default_db_url
    from genforge.serve.db import connect

    check_out(cfg.out)
    engine = connect(cfg.db or default_db_url(), create=False)
    rep = report(engine, pick_experiment(engine, cfg.model))

    def fmt(v: Any, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    table = Table(title=f"A/B experiment '{rep['experiment']}' (control: {rep['control']}; rated = feedback rate, "
                        "positive = positive rate, p50/p95 = latency)")
    for col in ("variant", "weight", "shown", "rated", "positive", "p50 s", "p95 s", "z", "p", "P(beat)"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for r in rep["variants"]:
        table.add_row(r["variant"], fmt(r["weight"], ".2f"), str(r["impressions"]),
                      f"{r['feedback_rate']:.1%} ({r['feedback']}, {r['raters']} users)", f"{r['positive_rate']:.1%} ({r['positive']})",
                      fmt(r["latency_p50"]), fmt(r["latency_p95"]), fmt(r["z"], ".2f"), fmt(r["p_value"], ".3g"),
                      fmt(r["prob_beat_control"]))
    console = Console()
    console.print(table)
    s = rep["srm"]
    console.print(f"sample ratio: chi-square {s['chi2']:.2f}, p = {s['p']:.3g}"
                  + (" [bold red]ALERT: sample ratio mismatch[/]" if s["alert"] else " (ok)"))
    rec = rep["recommendation"]
    console.print(f"[bold]recommendation: {rec['action']}[/] {rec.get('variant', '')} - {rec['why']}")
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report.json", rep)
        plot(rep, out / "report.png")
        console.print(f"wrote {out / 'report.json'} and {out / 'report.png'}")
    return rep
