import math

import pytest

from genforge.train.schedule import lr_at


def test_warmup_then_cosine_to_min_lr():
    kw = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "max_steps": 110}
    warm = [lr_at(s, **kw) for s in range(10)]
    assert warm == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    assert lr_at(10, **kw) == pytest.approx(1e-3)  # peak right after warm-up
    assert lr_at(60, **kw) == pytest.approx((1e-3 + 1e-4) / 2)  # half-way down the cosine
    assert lr_at(110, **kw) == pytest.approx(1e-4) and lr_at(500, **kw) == pytest.approx(1e-4)
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), "cosine must not increase"
    assert lr_at(35, **kw) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi * 0.25)) * 9e-4)


def test_time_budget_drives_the_decay():
    kw = {"lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0, "max_steps": 10**9}
    assert lr_at(100, time_fraction=0.5, **kw) == pytest.approx(5e-4)
    assert lr_at(100, time_fraction=1.0, **kw) == pytest.approx(0.0)
    assert lr_at(100, time_fraction=0.0, **kw) == pytest.approx(1e-3, rel=1e-6)
