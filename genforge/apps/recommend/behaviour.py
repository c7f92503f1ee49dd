"""Who interacted with what, as matrices: interaction weights, popularity and item-item co-occurrence.

The same `Behaviour` feeds the recommender's candidates and features and the item-kNN baseline, so the
baseline and the model see exactly the same co-occurrence statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from genforge.apps.recommend.data import Interactions


@dataclass
class Behaviour:
    users: list[str]
    user_index: dict[str, int]
    weights: sp.csr_matrix  # users x items: profile weight of each interaction (rating x recency)
    popularity: np.ndarray  # items: training interactions per item
    neighbours: sp.csr_matrix  # items x items: cosine of co-occurrence, top-k per row, zero diagonal
    user_factors: np.ndarray | None = None  # ALS factors (genforge.apps.recommend.mf), users x f
    item_factors: np.ndarray | None = None  # items x f
    # a --holdout build: every user of the input and the weights of all their interactions, held-out ones too,
    # so that serving excludes and profiles on everything a user did while the item-side statistics above stay
    # the training fold's
    all_users: dict[str, int] | None = None
    all_weights: sp.csr_matrix | None = None

    def history(self, user: str, *, everything: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, weights) of a known user, heaviest first; `everything`: from `all_weights` when the
        build has them (what the user did, not only what the model was fitted on)."""
        if everything and self.all_weights is not None:
            row = self.all_weights[self.all_users[user]]
        else:
            row = self.weights[self.user_index[user]]
        order = np.argsort(-row.data, kind="stable")
        return row.indices[order], row.data[order]


def interaction_weights(data: Interactions, item_index: dict[str, int]) -> tuple[list[str], sp.csr_matrix]:
    """Users and their users x items weight matrix.

    A rating maps linearly onto [0.5, 1.5] over the data's rating range (so a low rating still says "seen"
    but counts a third of a top one); with timestamps, a user's items halve in weight every 20 newer ones.
    Implicit data without time: weight 1.
    """
    users = sorted(set(data.users))
    uindex = {u: i for i, u in enumerate(users)}
    rows = np.array([uindex[u] for u in data.users], dtype=np.int64)
    cols = np.array([item_index[i] for i in data.items], dtype=np.int64)
    w = np.ones(len(rows), dtype=np.float32)
    rated = [r for r in data.ratings if r is not None]
    if rated:
        lo, hi = min(rated), max(rated)
        r = np.array([x if x is not None else hi for x in data.ratings], dtype=np.float32)
        w *= 0.5 + (r - lo) / (hi - lo) if hi > lo else 1.0
    if any(t is not None for t in data.times):
        t = np.array([x if x is not None else -np.inf for x in data.times], dtype=np.float64)
        order = np.lexsort((-t, rows))  # by user, newest first
        rank = np.empty(len(rows), dtype=np.float32)
        starts = np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]
        for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            rank[order[a:b]] = np.arange(b - a)
        w *= 0.5 ** (rank / 20)
    matrix = sp.csr_matrix((w, (rows, cols)), shape=(len(users), len(item_index)), dtype=np.float32)
    matrix.sum_duplicates()
    return users, matrix


def cooccurrence_neighbours(weights: sp.csr_matrix, k: int, block: int = 1024) -> sp.csr_matrix:
    """Top-k item-item cosine of the binary user x item matrix (the item-kNN of Sarwar et al. 2001),
    computed a block of items at a time so memory stays block x items."""
    binary = weights.copy()
    binary.data[:] = 1.0
    by_item = binary.T.tocsr()
    counts = np.asarray(binary.sum(0)).ravel()
    norm = np.sqrt(np.maximum(counts, 1))
    n = weights.shape[1]
    k = min(k, max(n - 1, 1))
    rows, cols, vals = [], [], []
    for first in range(0, n, block):
        last = min(first + block, n)
        co = (by_item[first:last] @ binary).toarray()
        co /= norm[first:last, None] * norm[None, :]
        co[np.arange(last - first), np.arange(first, last)] = 0.0
        top = np.argpartition(-co, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (last - first, 1))
        val = np.take_along_axis(co, top, axis=1)
        keep = val > 0
        rows.append(np.repeat(np.arange(first, last), keep.sum(1)))
        cols.append(top[keep])
        vals.append(val[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n),
                         dtype=np.float32)


def build_behaviour(data: Interactions, item_index: dict[str, int], k: int, factors: int = 0,
                    seed: int = 0) -> Behaviour:
    """Weights, popularity, co-occurrence neighbours and (factors > 0) ALS factors of the interactions."""
    users, weights = interaction_weights(data, item_index)
    popularity = np.bincount([item_index[i] for i in data.items], minlength=len(item_index)).astype(np.float32)
    behaviour = Behaviour(users, {u: i for i, u in enumerate(users)}, weights, popularity,
                          cooccurrence_neighbours(weights, k))
    if factors:
        from genforge.apps.recommend.mf import fit_als

        behaviour.user_factors, behaviour.item_factors = fit_als(weights, factors, seed=seed)
    return behaviour
