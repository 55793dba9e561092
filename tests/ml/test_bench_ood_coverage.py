"""``benchmarks/ood_coverage.py`` reports coverage with each chemical system weighing as one: a family of
87 polytypes held out together is one check of an interval, not 87."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ood_coverage")


def test_each_system_weighs_as_one(bench):
    systems = np.array(["Cd-I"] * 8 + ["Be-F", "I-Rb"])
    hit = np.array([False] * 8 + [True, True])
    ok = np.ones(10, dtype=bool)
    assert bench._system_weighted(hit, ok, systems) == pytest.approx(2 / 3)
    assert hit.mean() == pytest.approx(0.2)  # the row-weighted figure the family dominates


def test_rows_without_an_interval_leave_the_weights(bench):
    systems = np.array(["A", "A", "B", "C"])
    hit = np.array([True, False, False, True])
    ok = np.array([True, True, False, True])  # B has no interval: the average is over A and C
    assert bench._system_weighted(hit, ok, systems) == pytest.approx((0.5 + 1.0) / 2)
    assert bench._system_weighted(hit, np.zeros(4, dtype=bool), systems) is None


def test_metrics_carry_the_system_weighted_coverage(bench):
    y = np.array([1.0, 2.0, 3.0, 10.0])
    pred = bench._Pooled(mean=y.copy(), lower=y - 0.5, upper=y + 0.5, in_domain=np.ones(4, dtype=bool),
                         interval_ok=np.ones(4, dtype=bool))
    pred.upper[3] = 9.0  # the one row of system B is missed
    out = bench._metrics(y, pred, np.array(["A", "A", "A", "B"]))
    assert out["coverage"] == pytest.approx(0.75)
    assert out["coverage_system_weighted"] == pytest.approx(0.5)
    assert "coverage_system_weighted" not in bench._metrics(y, pred)


def test_subset_keeps_rows_of_every_field(bench):
    y = np.arange(5.0)
    pred = bench._Pooled(mean=y, lower=y - 1, upper=y + 1, in_domain=np.array([1, 0, 1, 0, 1], dtype=bool),
                         interval_ok=True)
    rows = np.array([False, True, False, True, False])
    part = bench._subset(pred, rows)
    assert np.array_equal(part.mean, [1.0, 3.0]) and np.array_equal(part.lower, [0.0, 2.0])
    assert not part.in_domain.any() and part.interval_ok.all() and part.interval_ok.shape == (2,)
