"""Implicit-feedback matrix factorisation (ALS, Hu, Koren & Volinsky 2008) via the `implicit` library.

Used twice: as the `als` baseline, and inside the recommender as one more candidate source and ranker
feature (the MF affinity), so the ranker can weigh collaborative, content and language-model signals.
A user the factorisation has not seen (a few liked items) gets a factor by the same closed-form
least-squares step ALS itself uses for users ("folding in").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

ALPHA = 20.0
REG = 0.05


def fit_als(weights: sp.csr_matrix, factors: int = 64, iterations: int = 15, seed: int = 0) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """(user factors [users, f], item factors [items, f]) of confidence 1 + ALPHA * weight."""
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    confidence = weights.copy().astype(np.float32)
    confidence.data = 1.0 + ALPHA * confidence.data
    with threadpool_limits(1, "blas"):  # implicit warns (and slows down) when BLAS threads compete with its own
        model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=REG,
                                        random_state=seed, num_threads=2, calculate_training_loss=False)
        model.fit(sp.csr_matrix(confidence), show_progress=False)
    return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


def fold_in(item_factors: np.ndarray, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ALS user step for one new user: argmin_u sum_i c_i (p_i - u.y_i)^2 + REG |u|^2 over all items
    (p = 1 on the given items, 0 elsewhere; c = 1 + ALPHA * weight on them, 1 elsewhere)."""
    y = item_factors
    if not len(items):
        return np.zeros(y.shape[1], dtype=np.float32)
    yl = y[items]
    c = 1.0 + ALPHA * weights.astype(np.float32)
    a = y.T @ y + (yl.T * (c - 1)) @ yl + REG * np.eye(y.shape[1], dtype=np.float32)
    return np.linalg.solve(a, yl.T @ c).astype(np.float32)
