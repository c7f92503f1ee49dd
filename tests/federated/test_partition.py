from collections import Counter

import numpy as np
import pytest

from genforge.errors import DataError
from genforge.federated.partition import plot_stats, split, stats


def covers(parts, n):
    flat = [i for p in parts for i in p]
    return sorted(flat) == list(range(n))


def skew(parts, labels):
    """Mean over clients of the share of their most common label (1 = one label per client)."""
    return np.mean([Counter(labels[i] for i in p).most_common(1)[0][1] / len(p) for p in parts])


def test_iid_is_a_disjoint_cover_of_equal_parts_and_deterministic():
    parts = split("iid", 103, 4, alpha=0.5, seed=1)
    assert covers(parts, 103) and {len(p) for p in parts} <= {25, 26}
    assert parts == split("iid", 103, 4, alpha=0.5, seed=1) and parts != split("iid", 103, 4, alpha=0.5, seed=2)


def test_dirichlet_skews_labels_more_as_alpha_shrinks():
    labels = ["a", "b", "c"] * 200
    skewed = split("dirichlet", 600, 6, alpha=0.1, seed=0, labels=labels)
    mixed = split("dirichlet", 600, 6, alpha=100.0, seed=0, labels=labels)
    assert covers(skewed, 600) and covers(mixed, 600)
    assert skew(skewed, labels) > 0.7 > 0.45 > skew(mixed, labels)
    rows = stats(skewed, [[labels[i] for i in p] for p in skewed])
    assert sum(r["size"] for r in rows) == 600 and set(rows[0]["labels"]) <= {"a", "b", "c"}


def test_quantity_skew_varies_sizes_but_not_labels(tmp_path):
    parts = split("quantity", 500, 5, alpha=0.3, seed=3)
    sizes = sorted(len(p) for p in parts)
    assert covers(parts, 500) and sizes[0] >= 1 and sizes[-1] > 3 * sizes[0]
    out = plot_stats(stats(parts), tmp_path / "partition.png")
    assert out.stat().st_size > 0


def test_bad_partitions_say_why():
    with pytest.raises(DataError, match="cannot be split"):
        split("iid", 2, 3, alpha=1, seed=0)
    with pytest.raises(DataError, match="needs labels"):
        split("dirichlet", 10, 2, alpha=1, seed=0)
