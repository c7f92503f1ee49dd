"""Splitting one dataset into client silos (IID, label-skew Dirichlet, quantity skew), and their statistics.

Partitions are pure functions of (labels or size, clients, alpha, seed): every client process computes
the same split and keeps its own part, so in simulation and deployment alike no data ever moves.
Label skew follows the usual FL benchmark recipe (Hsu et al. 2019; FedNLP): for each class, the
shares of the clients are drawn from Dirichlet(alpha); small alpha gives silos dominated by one or two
classes. Quantity skew draws the client sizes from Dirichlet(alpha) with labels mixed IID.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from genforge.errors import DataError


def iid(n: int, clients: int, seed: int) -> list[list[int]]:
    """A random permutation cut into `clients` near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(part.tolist()) for part in np.array_split(order, clients)]


def quantity_skew(n: int, clients: int, alpha: float, seed: int) -> list[list[int]]:
    """Parts of Dirichlet(alpha) sizes (each at least one example) over a random permutation."""
    rng = np.random.default_rng(seed)
    if n < clients:
        raise DataError(f"{n} examples cannot fill {clients} clients")
    shares = rng.dirichlet([alpha] * clients)
    sizes = 1 + np.floor(shares * (n - clients)).astype(int)
    sizes[np.argmax(shares)] += n - sizes.sum()
    order = rng.permutation(n)
    cuts = np.cumsum(sizes)[:-1]
    return [sorted(part.tolist()) for part in np.split(order, cuts)]


def dirichlet(labels: list[str], clients: int, alpha: float, seed: int, min_size: int = 2) -> list[list[int]]:
    """Label skew: the examples of each class dealt to clients in Dirichlet(alpha) shares.

    Redrawn (up to 100 times, new draws of the same seeded generator) until every client holds at
    least `min_size` examples, so no silo is empty; the split stays a function of the seed.
    """
    if len(labels) < clients * min_size:
        raise DataError(f"{len(labels)} examples are too few for {clients} clients of at least {min_size}")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    classes = sorted(set(labels))
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(idx)).astype(int)[:-1]
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k] += piece.tolist()
        if min(map(len, parts)) >= min_size:
            return [sorted(p) for p in parts]
    raise DataError(f"could not split {len(labels)} examples into {clients} clients of >= {min_size} with "
                    f"--alpha {alpha}: raise --alpha or lower --clients")


def split(kind: str, n: int, clients: int, *, alpha: float, seed: int,
          labels: list[str] | None = None) -> list[list[int]]:
    """Indices of each client's examples under partition `kind` (iid | dirichlet | quantity)."""
    if n < clients:
        raise DataError(f"{n} examples cannot be split over {clients} clients")
    if kind == "iid":
        return iid(n, clients, seed)
    if kind == "quantity":
        return quantity_skew(n, clients, alpha, seed)
    if kind == "dirichlet":
        if labels is None:
            raise DataError("a dirichlet partition needs labels")
        return dirichlet(labels, clients, alpha, seed)
    raise DataError(f"unknown partition '{kind}'")


def stats(parts: list[list[Any]], labels_of: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """Per client: size and (if labelled) the label histogram. `labels_of[k]` are client k's labels."""
    out = []
    for k, part in enumerate(parts):
        row: dict[str, Any] = {"client": k, "size": len(part)}
        if labels_of is not None:
            row["labels"] = dict(sorted(Counter(labels_of[k]).items()))
        out.append(row)
    return out


def plot_stats(rows: list[dict[str, Any]], out: Path) -> Path:
    """partition.png: a stacked bar per client (label histogram), or plain sizes when unlabelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(rows) + 3), 4), dpi=110)
    x = np.arange(len(rows))
    if all("labels" in r for r in rows):
        classes = sorted({c for r in rows for c in r["labels"]})
        bottom = np.zeros(len(rows))
        for c in classes:
            counts = np.array([r["labels"].get(c, 0) for r in rows])
            ax.bar(x, counts, bottom=bottom, label=str(c))
            bottom += counts
        ax.legend(title="label", fontsize=8)
    else:
        ax.bar(x, [r["size"] for r in rows])
    ax.set_xticks(x, [str(r["client"]) for r in rows])
    ax.set_xlabel("client")
    ax.set_ylabel("examples")
    ax.set_title("data per client")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
