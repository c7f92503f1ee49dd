"""The baselines every evaluation computes in the same run, on the same training interactions.

Each is `fit(...) -> scorer` where scorer(user rows) gives a users x items score matrix; seen items are
masked by the caller. Baselines see only what the recommender sees: training interactions and item text
(never anime_info's site-wide rating/members columns, which leak popularity from the held-out data).
- popular: training interactions per item;
- tfidf: cosine of TF-IDF item text to the user's weighted mean TF-IDF vector (content only);
- itemknn: sum over the history of top-k co-occurrence cosine (the recommender's own neighbour matrix);
- als: implicit-feedback matrix factorisation, `implicit` 0.7 AlternatingLeastSquares (Hu et al. 2008),
  confidence 1 + 20 * weight (genforge.apps.recommend.mf).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from genforge.apps.recommend.behaviour import Behaviour
from genforge.apps.recommend.data import Items

Scores = Callable[[np.ndarray], np.ndarray]  # user rows -> [len(rows), items]


def popular(behaviour: Behaviour) -> Scores:
    pop = behaviour.popularity.astype(np.float32)
    return lambda rows: np.tile(pop, (len(rows), 1))


def tfidf(behaviour: Behaviour, items: Items) -> Scores:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    matrix = TfidfVectorizer(min_df=1, sublinear_tf=True, token_pattern=r"(?u)\b\w+\b").fit_transform(items.texts)
    matrix = normalize(matrix).astype(np.float32)

    def scores(rows: np.ndarray) -> np.ndarray:
        profiles = normalize(behaviour.weights[rows] @ matrix)
        return np.asarray((profiles @ matrix.T).todense())

    return scores


def itemknn(behaviour: Behaviour) -> Scores:
    return lambda rows: np.asarray((behaviour.weights[rows] @ behaviour.neighbours).todense())


def als(behaviour: Behaviour, factors: int = 64, iterations: int = 15, seed: int = 0) -> Scores:
    from genforge.apps.recommend.mf import fit_als

    users, item_factors = fit_als(behaviour.weights, factors, iterations, seed)
    return lambda rows: users[rows] @ item_factors.T


def top_k(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> list[list[int]]:
    """Top-k item indices per row, seen items excluded."""
    scores = scores.astype(np.float32, copy=True)
    coo = seen.tocoo()
    scores[coo.row, coo.col] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).tolist()
