"""The best path through a lattice of candidates under a bigram model: the decoder both halves of
`--correct-typos` share (Chinese characters in `homophones`, English words in `english`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

Column = list[tuple[str, float]]  # the candidates of one position and what choosing each costs (nats)


def best_path(columns: list[Column], log_p: Callable[[str, str], float], start: str, end: str) -> list[str]:
    """One candidate per column, maximising the sum of `log_p(previous, candidate)` from `start` to `end`
    minus the candidates' costs (Viterbi)."""
    lattice = [[(start, 0.0)], *columns, [(end, 0.0)]]
    scores = [0.0]
    back: list[list[int]] = []
    for prev, here in itertools.pairwise(lattice):
        step = [max((scores[i] + log_p(p, item), i) for i, (p, _) in enumerate(prev)) for item, _ in here]
        back.append([i for _, i in step])
        scores = [s - cost for (s, _), (_, cost) in zip(step, here, strict=True)]
    best, out = 0, []
    for column, pointers in zip(reversed(lattice[:-1]), reversed(back), strict=True):
        best = pointers[best]
        out.append(column[best][0])
    return out[-2::-1]
