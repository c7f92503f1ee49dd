import math

import numpy as np
import pytest

from genforge.apps.recommend.metrics import coverage, mrr_at, ndcg_at, novelty, recall_at, summary


def test_recall_ndcg_mrr_by_hand():
    ranked, relevant = [5, 1, 7, 2], {1, 2, 9}
    assert recall_at(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at(ranked, relevant, 4) == pytest.approx(2 / 3)
    # hits at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal for 3 relevant in top 4 = 1 + 1/log2(3) + 1/2
    assert ndcg_at(ranked, relevant, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5))
                                                         / (1 + 1 / math.log2(3) + 0.5))
    # k=2: one hit at rank 2; ideal = min(2, 3) hits
    assert ndcg_at(ranked, relevant, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert mrr_at(ranked, relevant, 4) == 0.5
    assert mrr_at(ranked, relevant, 1) == 0.0
    assert ndcg_at([1, 2], {1, 2}, 10) == pytest.approx(1.0)
    assert recall_at([1], set(), 10) == 0.0


def test_coverage_novelty_and_summary():
    lists = [[0, 1], [1, 2]]
    assert coverage(lists, catalogue=10, k=2) == pytest.approx(0.3)
    assert coverage(lists, catalogue=10, k=1) == pytest.approx(0.2)
    popularity = np.array([3.0, 1.0, 0.0, 0.0])
    # users = 3: p = (pop + 1) / 4 -> item0 1, item1 0.5, item2 0.25 -> -log2: 0, 1, 2
    assert novelty(lists, popularity, users=3, k=2) == pytest.approx((0 + 1 + 1 + 2) / 4)
    out = summary(lists, [{1}, {3}], k=2, catalogue=4, popularity=popularity, users=3, cold={2, 3})
    assert out["recall@2"] == pytest.approx(0.5) and out["mrr@2"] == pytest.approx(0.25)
    assert out["cold_users"] == 1 and out["cold_recall@2"] == 0.0  # user 2's cold item 3 is not in its list


def test_cold_recall_without_cold_users_is_undefined_not_zero(capsys):
    """A split where no held-out item is cold used to report cold_recall@k = 0.0, as if every method failed."""
    import json

    from genforge.apps.recommend.evaluate import markdown, print_table

    lists, popularity = [[0, 1], [1, 2]], np.array([3.0, 1.0, 9.0, 9.0])
    out = summary(lists, [{1}, {3}], k=2, catalogue=4, popularity=popularity, users=3, cold={0})
    assert out["cold_users"] == 0 and out["cold_recall@2"] is None
    report = {"users": 2, "k": 2, "cold_items": 1, "methods": {"genforge-fast": out}, "default": "genforge-fast",
              "latency_ms": {"p50": 1.0, "p95": 2.0}}
    assert json.loads(json.dumps(report, allow_nan=False))["methods"]["genforge-fast"]["cold_recall@2"] is None
    row = next(line for line in markdown(report).splitlines() if line.startswith("| genforge-fast"))
    assert row.endswith("| n/a |")
    print_table(report)
    assert "n/a" in capsys.readouterr().err
