"""Text-based recommender vs popularity, TF-IDF, item-kNN and ALS on the shared recommendation data.

Data (../shared/data, split as its README says: a user's item is held out when sha256("user:item") % 5 == 0):
- anime_recommendations: 419,943 explicit ratings (4,714 users, 7,390 items); item text = name + genres + type.
  anime_info's `rating`/`members` columns are site-wide and leak popularity: they are NOT used.
- movietweetings_udacity: 8,000 ratings of 3,278 users over a 31,245-movie catalogue; item text = title + genres.
  Sparse and cold-start heavy (most items and users have one rating).
Each data set: one `build --holdout` (MiniLM item embeddings + FAISS, the interest scorer fine-tuned from a
2-layer MiniLM on history/candidate pairs, LightGBM rankers), then one `eval` computing the baselines in the
same run. Printed: Recall@10, NDCG@10, MRR@10, coverage, novelty, cold-start Recall@10 (held-out items with
< 5 training interactions), p50/p95 latency per user, and the goals:
NDCG@10 >= 1.2x the best non-text baseline (anime); cold-start Recall@10 >= 2x popularity's; p95 < 100 ms.
The cold-start goal, as the issue states it, cannot fail: popularity never recommends an item with < 5
interactions, so its cold recall is 0 by construction. Cold-start Recall@10 is therefore also printed against
TF-IDF, the baseline that can find cold items (by their text).

    .venv/bin/python benchmarks/bench_recommend.py            # full: about 60-90 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_recommend.py --quick    # smoke: small scorer/ranker, 100 users, ~15 min here
    .venv/bin/python benchmarks/bench_recommend.py --data anime

Work folders go to --work (default runs/bench_recommend[_quick]); a rerun reuses the item embeddings there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def anime(work: Path, quick: bool) -> dict:
    d = DATA / "anime_recommendations"
    return {"items": d / "anime_info.dat", "interactions": [d / "anime_ratings.dat"], "item_id_field": "anime_ids",
            "text_fields": ["name", "genre", "type"], "title_field": "name", "genre_field": "genre",
            "user_field": "User_ID", "item_field": "Anime_ID", "rating_field": "Feedback"}


def movietweetings(work: Path, quick: bool) -> dict:
    """Quick: the rated movies plus 1,000 unrated ones (embedding all 31k titles takes a while on 2 cores)."""
    d = DATA / "movietweetings_udacity"
    items = d / "movies_clean.csv"
    if quick:
        with open(d / "train_data.csv", encoding="utf-8", newline="") as f:
            rated = {str(int(r["movie_id"])) for r in csv.DictReader(f)}
        with open(items, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        rest = [r for r in rows if str(int(r["movie_id"])) not in rated]
        keep = [r for r in rows if str(int(r["movie_id"])) in rated] + random.Random(0).sample(rest, 1000)
        items = work / "movies_quick.csv"
        work.mkdir(parents=True, exist_ok=True)
        with open(items, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, ["movie_id", "movie", "genre"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(keep)
    return {"items": items, "interactions": [d / "train_data.csv"], "item_id_field": "movie_id",
            "text_fields": ["movie", "genre"], "title_field": "movie", "genre_field": "genre", "user_field": "user_id",
            "item_field": "movie_id", "rating_field": "rating", "time_field": "timestamp"}


SETS = {"anime": anime, "movietweetings": movietweetings}


def run(name: str, work: Path, quick: bool, tune_encoder: bool = False) -> dict:
    from genforge.apps.recommend.build import build
    from genforge.apps.recommend.config import BuildConfig, EvalConfig
    from genforge.apps.recommend.evaluate import evaluate

    fields = SETS[name](work, quick)
    out = work / name
    reuse = out if (out / "manifest.json").is_file() else None
    sizes = ({"scorer_users": 150, "scorer_steps": 15, "ranker_users": 150} if quick else
             {"scorer_users": 1500, "scorer_steps": 300, "ranker_users": 1000}) | {"tune_encoder": tune_encoder}
    t0 = time.perf_counter()
    if reuse is not None:  # build into a fresh folder, reusing the old one's embeddings, then swap
        tmp = work / f"{name}.new"
        build(BuildConfig(**fields, out=tmp, reuse=reuse, **sizes))
        os.replace(out, work / f"{name}.old")
        os.replace(tmp, out)
        import shutil

        shutil.rmtree(work / f"{name}.old")
    else:
        build(BuildConfig(**fields, out=out, **sizes))
    build_seconds = time.perf_counter() - t0
    report = evaluate(EvalConfig(model=out, out=work / f"{name}-eval", users=100 if quick else 1000,
                                 latency_users=20 if quick else 200))
    report["build_seconds"] = round(build_seconds, 1)
    return report


def show(name: str, report: dict) -> None:
    from genforge.apps.recommend.evaluate import cell

    k = report["k"]
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}", "coverage", "novelty", f"cold_recall@{k}"]
    print(f"\n== {name}: {report['users']} held-out users, {report['cold_items']} cold items "
          f"(build {report['build_seconds']}s) ==")
    print(f"{'method':<15}" + "".join(f"{c:>16}" for c in cols))
    for method, m in report["methods"].items():
        print(f"{method:<15}" + "".join(f"{cell(m[c]):>16}" for c in cols))
    lat = report["latency_ms"]
    ours = report["default"]
    print(f"default path (chosen by the build's validation): {ours}")
    best = report.get("ndcg_vs_best_non_text", {})
    cold = report.get("cold_recall_vs_popular")
    pop_cold = report["methods"].get("popular", {}).get(f"cold_recall@{k}")
    print(f"NDCG@{k} {ours} / best non-text ({best.get('baseline')}): x{best.get('ratio')}  (goal >= 1.2)")
    fast_ratio = (report["methods"]["genforge-fast"][f"ndcg@{k}"] / report["methods"][best["baseline"]][f"ndcg@{k}"]
                  if best.get("baseline") else None)
    if ours != "genforge-fast" and fast_ratio:
        print(f"NDCG@{k} genforge-fast (no LM) / best non-text: x{fast_ratio:.3f}")
    mine = report["methods"][ours][f"cold_recall@{k}"]
    if mine is None:  # undefined, not 0: no held-out user has a cold item
        print(f"cold-start Recall@{k}: n/a (no held-out user has a cold item)")
    elif pop_cold is not None:
        verdict = f"x{cold}" if cold is not None else ("met: popularity scores 0" if mine > 0 else "not met: both 0")
        print(f"cold-start Recall@{k}: {mine:.4f} vs popularity {pop_cold:.4f} -> {verdict} (goal >= 2x; met as "
              f"soon as genforge finds any: popularity never recommends an item with < 5 interactions)")
    tfidf_cold = report["methods"].get("tfidf", {}).get(f"cold_recall@{k}")
    if mine is not None and tfidf_cold is not None:
        versus = f"x{mine / tfidf_cold:.3f}" if tfidf_cold > 0 else "TF-IDF finds none"
        print(f"cold-start Recall@{k}: {mine:.4f} vs TF-IDF {tfidf_cold:.4f} -> {versus} (the baseline that can "
              f"find cold items, by their text)")
    lm = f"; with the LM re-rank p50 {lat['lm_p50']} ms, p95 {lat['lm_p95']} ms" if "lm_p95" in lat else ""
    print(f"latency per user ({ours}): p50 {lat['p50']} ms, p95 {lat['p95']} ms  (goal p95 < 100 ms){lm}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", choices=list(SETS), action="append")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--tune-encoder", action="store_true", help="build with --tune-encoder")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path("runs") / ("bench_recommend_quick" if args.quick else "bench_recommend")
    reports = {}
    for name in args.data or list(SETS):
        reports[name] = run(name, work, args.quick, args.tune_encoder)
    for name, report in reports.items():
        show(name, report)
    (work / "bench.json").write_text(json.dumps(reports, indent=2, default=str))
    print(f"\nreports: {work}/*-eval/report.md, {work}/bench.json")


if __name__ == "__main__":
    main()
