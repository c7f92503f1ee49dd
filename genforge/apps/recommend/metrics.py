"""Offline ranking metrics of top-k lists against held-out items (binary relevance).

- Recall@k: hits in the top k / number of held-out items of the user;
- NDCG@k: sum of 1/log2(rank + 1) over hits, divided by the same sum for min(k, held-out) perfect hits;
- MRR@k: 1 / rank of the first hit in the top k (0 without one);
- coverage: distinct recommended items over all users / catalogue size;
- novelty: mean self-information -log2(p(i)) of recommended items, p(i) = (training users of i + 1) /
  (users + 1): recommending the long tail scores high.
Per-user values are averaged over users (each user counts once). Cold-start Recall@k averages over the users
having a cold held-out item; with none it is undefined, so None (JSON null, shown "n/a"), never 0.
"""

from __future__ import annotations

import math

import numpy as np


def recall_at(ranked: list, relevant: set, k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at(ranked: list, relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return dcg / ideal


def mrr_at(ranked: list, relevant: set, k: int) -> float:
    return next((1 / (r + 1) for r, item in enumerate(ranked[:k]) if item in relevant), 0.0)


def coverage(lists: list[list], catalogue: int, k: int) -> float:
    return len({i for ranked in lists for i in ranked[:k]}) / catalogue if catalogue else 0.0


def novelty(lists: list[list], popularity: np.ndarray, users: int, k: int) -> float:
    items = [i for ranked in lists for i in ranked[:k]]
    if not items:
        return 0.0
    p = (popularity[items] + 1) / (users + 1)
    return float(np.mean(-np.log2(p)))


def summary(lists: list[list], relevant: list[set], *, k: int, catalogue: int, popularity: np.ndarray,
            users: int, cold: set | None = None) -> dict[str, float | None]:
    """All metrics of one method; `cold` adds Recall@k on the cold-start held-out items (users having any),
    None when no user has one: a split without cold users says nothing about cold-start quality."""
    out = {f"recall@{k}": float(np.mean([recall_at(r, rel, k) for r, rel in zip(lists, relevant, strict=True)])),
           f"ndcg@{k}": float(np.mean([ndcg_at(r, rel, k) for r, rel in zip(lists, relevant, strict=True)])),
           f"mrr@{k}": float(np.mean([mrr_at(r, rel, k) for r, rel in zip(lists, relevant, strict=True)])),
           "coverage": coverage(lists, catalogue, k), "novelty": novelty(lists, popularity, users, k)}
    if cold is not None:
        pairs = [(r, rel & cold) for r, rel in zip(lists, relevant, strict=True) if rel & cold]
        out[f"cold_recall@{k}"] = float(np.mean([recall_at(r, rel, k) for r, rel in pairs])) if pairs else None
        out["cold_users"] = len(pairs)
    return out
