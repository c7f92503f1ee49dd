"""The share detectors' standard error under over-dispersion: when the true negative share itself varies from
hour to hour, z must still have about unit spread (it had 1.2-1.8: the variance, fed deviations clipped to
an under-estimated standard error and started at 0, stayed low), while a surge still barely moves the
baseline and is still found."""

import json
import math
import random
import statistics

import pytest

from genforge.apps.monitor.analytics import Window
from genforge.apps.monitor.rules import (
    DEFAULT_RULES,
    Rule,
    _share_z,
    clipped_variance_share,
    fold,
    initial_state,
)

H = 3600


def hourly(hours, seed, extra_sd=0.0, base=0.15, surge=()):
    """Windows of 20-60 items (the replay's hourly volumes) whose true share is drawn each hour from a Beta of
    mean `base` and sd `extra_sd` (0: a fixed share, binomial noise only); doubled in the `surge` hours."""
    rng = random.Random(seed)
    size = base * (1 - base) / extra_sd ** 2 - 1 if extra_sd else 0.0
    out = []
    for h in range(hours):
        share = rng.betavariate(base * size, (1 - base) * size) if extra_sd else base
        share *= 2 if h in surge else 1
        n = rng.randint(20, 60)
        out.append(Window("x", h * H, n=n, negative=sum(rng.random() < share for _ in range(n))))
    return out


def z_spread(extra_sd, seeds=range(8)):
    rule = Rule("z", "ewma_z")
    zs = [s.z for seed in seeds for s in _share_z(rule, initial_state(rule), hourly(24 * 14, seed, extra_sd))]
    return statistics.pstdev(zs)


@pytest.mark.parametrize("extra_sd", [0.0, 0.05, 0.08], ids=["binomial", "sd-0.05", "sd-0.08"])
def test_z_has_unit_spread_with_and_without_over_dispersion(extra_sd):
    """Two weeks of a 0.15 share, per-hour sd 0.05 / 0.08 beyond binomial noise (~0.057 at 40 items): z's sd
    after the warm-up was 1.22 / 1.78 (1.04 binomial), now 1.03 / 1.06 (0.96); it must be about 1 in every
    case."""
    assert 0.9 <= z_spread(extra_sd) <= 1.12


def test_clipped_variance_share_is_the_normal_second_moment_kept_by_the_clip():
    assert clipped_variance_share(2.0) == pytest.approx(0.92054, abs=1e-5)
    assert clipped_variance_share(1.0) == pytest.approx(0.51606, abs=1e-5)
    assert clipped_variance_share(10.0) == pytest.approx(1.0)


@pytest.mark.parametrize("extra_sd", [0.0, 0.05], ids=["binomial", "over-dispersed"])
def test_a_doubling_barely_moves_the_baseline_and_is_found(extra_sd):
    """A 6-hour doubling after ~8 days: the baseline moves by under half a standard error, the default rule
    (binomial CUSUM) finds it in every seed and ewma_z in most. On binomial noise neither fires in the 8 days
    before it (the baseline as an EWMA of its first window fired the default rule in days 2-5 of 4 seeds of
    5); over-dispersed, both may fire now and then (a share of sd 0.05 reaches 2x by itself)."""
    rule = Rule("z", "ewma_z")
    surge = range(200, 206)
    found = {"default": 0, "ewma_z": 0}
    for seed in range(5):
        ws = hourly(230, 100 + seed, extra_sd, surge=surge)
        state = initial_state(rule)
        _share_z(rule, state, ws[:surge[0]])
        before, se = state["mean"], math.sqrt(max(state["var"], state["binvar"]))
        _share_z(rule, state, ws[surge[0]:surge[-1] + 1])
        assert abs(state["mean"] - before) < 0.5 * se
        for name, detector in (("default", DEFAULT_RULES[0]), ("ewma_z", rule)):
            hits = [h.index for h in fold(detector, initial_state(detector), ws)]
            found[name] += any(i in surge for i in hits)
            assert extra_sd or all(i >= surge[0] - 12 for i in hits)
    assert found["default"] == 5 and found["ewma_z"] >= 3


def test_a_state_saved_before_the_variance_change_still_folds():
    """States live in the database as JSON: one written before this change (the same keys, its variance from
    clipped deviations) goes on folding, keeps its keys, and still finds a surge without false alerts."""
    saved = '{"seen": 300, "mean": 0.15, "var": 0.0024, "binvar": 0.0031, "s": 0.0}'
    rule = DEFAULT_RULES[0]
    state = json.loads(saved)
    ws = hourly(60, seed=7, surge=range(48, 54))
    hits = [h.index for h in fold(rule, state, ws)]
    assert hits and all(48 <= i < 56 for i in hits)
    assert set(state) == set(json.loads(saved)) == set(initial_state(rule))
    assert 0.1 < state["mean"] < 0.2 and state["var"] > 0


def false_alerts_per_day(rule, extra_sd, seeds=range(12), days=14):
    alerts = sum(len(fold(rule, initial_state(rule), hourly(24 * days, seed, extra_sd))) for seed in seeds)
    return alerts / (len(seeds) * days)


@pytest.mark.parametrize("extra_sd", [0.0, 0.05], ids=["binomial", "over-dispersed"])
def test_the_dispersion_factor_is_the_windows_variance_over_the_binomial_one(extra_sd):
    """Binomial noise: about 1 (the excess variance is only estimation noise). A share of sd 0.05 around 0.15 in
    windows of ~40 items adds 0.0025 to a binomial variance of ~0.0032: about 1.8."""
    rule = DEFAULT_RULES[0]
    factors = [s.dispersion for seed in range(6) for s in _share_z(rule, initial_state(rule),
                                                                   hourly(24 * 14, seed, extra_sd))]
    assert min(factors) >= 1
    assert statistics.mean(factors) == pytest.approx(1.8 if extra_sd else 1.0, abs=0.25)


def test_the_binomial_cusum_keeps_its_false_alert_rate_under_over_dispersion():
    """The default rule on two weeks of a 0.15 share whose true value wanders by sd 0.05 an hour (news comes in
    bursts): testing the counts as binomial, it fired 0.41 times a day (0.07 on binomial noise); each window's
    log-likelihood ratio divided by its dispersion factor brings that to ~0.1, and binomial noise is unchanged."""
    rule = DEFAULT_RULES[0]
    assert false_alerts_per_day(rule, 0.05) < 0.2
    assert false_alerts_per_day(rule, 0.0) < 0.12
