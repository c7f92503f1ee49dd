"""`genforge app support eval`: retrieval, answers, hand-off and latency of a built assistant.

Retrieval alone (in-scope questions, the FAQ id as the one relevant entry; before the intent classifier): Hit@1, Hit@5, MRR@10, nDCG@10.
Answers: every question goes through the full answering path one at a time (retrieve, classify,
decide, generate when the policy says so), which also gives the latency; an in-scope answer is right
when it is not handed off and the entry it answers from is the labelled one (`answer_accuracy`).
Hand-off: precision/recall/F1 of handing off against the 'oos' labels. Latency p50/p95 per action.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.support.config import SupportEvalConfig
from genforge.apps.support.policy import OOS, f1


def ranking_metrics(ranks: list[int | None]) -> dict[str, float]:
    """Metrics of the rank (1-based, None = not in the top 10) of each question's relevant entry."""
    n = max(len(ranks), 1)
    return {"hit@1": sum(r == 1 for r in ranks) / n, "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
            "mrr@10": sum(1 / r for r in ranks if r is not None) / n,
            "ndcg@10": sum(1 / math.log2(r + 1) for r in ranks if r is not None) / n}


def percentiles(seconds: list[float]) -> dict[str, float | int]:
    if not seconds:
        return {"n": 0}
    return {"n": len(seconds), "p50": float(np.percentile(seconds, 50)), "p95": float(np.percentile(seconds, 95))}


def evaluate_assistant(assistant: Any, rows: list[tuple[str, str]], max_new_tokens: int = 160) -> tuple[dict, list]:
    """(report, per-question results) of `assistant` on (text, label) rows."""
    queries = [t for t, _ in rows]
    hits, _, _ = assistant.signals(queries, k=10)
    ranks = []
    for (_, label), h in zip(rows, hits, strict=True):
        if label != OOS:
            entries = [x.passage.entry for x in h]
            ranks.append(entries.index(label) + 1 if label in entries else None)
    from tqdm.auto import tqdm

    results, latency = [], {}
    for text, label in tqdm(rows, desc="answering", unit="question", dynamic_ncols=True):
        answer = assistant.answer([{"role": "user", "content": text}], max_new_tokens)
        results.append({"text": text, "label": label, "action": answer.action, "entry": answer.entry,
                        "confidence": round(answer.confidence, 4), "oos_score": answer.oos_score,
                        "seconds": round(answer.seconds, 4), "answer": answer.text[:500]})
        latency.setdefault(answer.action, []).append(answer.seconds)
    is_oos = np.array([r["label"] == OOS for r in results])
    handoff = np.array([r["action"] == "handoff" for r in results])
    right = np.array([r["action"] != "handoff" and r["entry"] == r["label"] for r in results])
    inscope = ~is_oos
    p, r, f = f1(handoff, is_oos)
    report = {"questions": len(rows), "inscope": int(inscope.sum()), "oos": int(is_oos.sum()),
              **ranking_metrics(ranks),
              "answer_accuracy": float(right[inscope].mean()) if inscope.any() else None,
              "faq_answers": float(np.mean([x["action"] == "faq" for x in results])),
              "generated_answers": float(np.mean([x["action"] == "generate" for x in results])),
              "handoff_precision": p, "handoff_recall": r, "handoff_f1": f,
              "handoff_rate_inscope": float(handoff[inscope].mean()) if inscope.any() else None,
              "latency": {action: percentiles(s) for action, s in sorted(latency.items())}}
    return report, results


def evaluate(cfg: SupportEvalConfig) -> dict[str, Any]:
    from genforge.apps.support.assistant import load_assistant
    from genforge.apps.support.build import check_labels, read_questions
    from genforge.artifacts import atomic_write_text, begin_output, write_json, write_manifest

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    rows = read_questions(cfg.data)
    rows = rows[:cfg.limit] if cfg.limit else rows
    assistant = load_assistant(cfg.assistant)
    check_labels(cfg.data, rows, assistant.index.entries)
    started = begin_output(cfg.out, "app.support.eval") if cfg.out else None
    report, results = evaluate_assistant(assistant, rows, cfg.max_new_tokens)
    if cfg.out:
        out = Path(cfg.out)
        write_json(out / "report.json", report)
        atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        write_manifest(out, "app.support.eval", cfg, inputs=[cfg.data], started=started,
                       metrics={k: v for k, v in report.items() if k != "latency"})
    print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="support assistant evaluation")
    table.add_column("metric")
    table.add_column("value")
    for key, value in report.items():
        if key == "latency":
            for action, p in value.items():
                table.add_row(f"latency {action}", f"n={p['n']} p50={p.get('p50', 0):.3f}s p95={p.get('p95', 0):.3f}s")
        else:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
