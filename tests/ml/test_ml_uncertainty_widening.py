"""Distance-aware interval widening: w(d) narrows or keeps the interval near the data (two-stage:
nominal coverage there), widens it farther out, and gives no interval beyond the calibrated distances.

The estimator-level problem: ten Gaussian clusters in 4-D and a smooth nonlinear target with little
noise. Three clusters are held out, so their rows lie away from every training row; the networks
extrapolate there and the unwidened intervals, whose width comes from the nearest training rows,
under-cover them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from matflow.featurize import FeatureCleaner
from matflow.ml.estimator import MODNetRegressor
from matflow.ml.uncertainty import (
    NO_INTERVAL_NOTE,
    ApplicabilityDomain,
    CrossConformal,
    DistanceWidening,
    conformal_quantile,
    empirical_coverage,
)

SMALL = dict(n_features=None, widths=((32,), (16,), (8,)), epochs=80, patience=15, n_estimators=3,
             batch_size=32, lr=3e-3, n_threads=1)
TINY = dict(n_features=None, widths=((8,), (8,), (4,)), epochs=5, patience=3, n_estimators=2, batch_size=16,
            n_threads=1)


def _clusters(n: int, seed: int, centers_seed: int = 0, n_clusters: int = 10, dim: int = 4):
    centers = np.random.default_rng(centers_seed).uniform(-2.5, 2.5, size=(n_clusters, dim))
    rng = np.random.default_rng(seed)
    g = rng.integers(n_clusters, size=n)
    X = centers[g] + 0.45 * rng.normal(size=(n, dim))
    y = np.sin(1.5 * X[:, 0]) * np.cos(X[:, 1]) + 0.5 * X[:, 2] * X[:, 3] + 0.05 * rng.normal(size=n)
    return X, y, g


HELD_OUT = (1, 4, 7)


@pytest.fixture(scope="module")
def fitted():
    threads = torch.get_num_threads()
    X, y, g = _clusters(800, seed=0)
    train = ~np.isin(g, HELD_OUT)
    est = MODNetRegressor(**SMALL).fit(X[train], y[train])
    torch.set_num_threads(threads)
    return est, X, y, g


def _unwidened(est: MODNetRegressor) -> MODNetRegressor:
    twin = copy.copy(est)
    twin.widening_ = None
    return twin


def test_widening_factor_is_one_near_the_data_and_grows_with_distance():
    """Scores whose scale is 1 up to d = 1 and grows linearly beyond (noise growing away from the data)."""
    rng = np.random.default_rng(0)

    def draw(n):
        d = rng.uniform(0.0, 3.0, size=n)
        scale = 1.0 + 2.0 * np.maximum(0.0, d - 1.0)
        return d, np.abs(rng.normal(size=n)) / 1.645 * scale  # 90 % quantile of the scores: scale

    d, s = draw(4000)
    w = DistanceWidening(0.9).fit(d, s)
    assert w.factor_.shape == (20, 1) and np.all(np.diff(w.factor_[:, 0]) >= 0) and w.factor_.min() >= 1.0
    assert w.max_distance == pytest.approx(d.max())
    near, far = w.factor(np.array([0.3, 0.8]))[:, 0], w.factor(np.array([2.7]))[0, 0]
    assert np.all(near <= 1.15)
    assert 3.5 <= far <= 6.0  # the needed factor is 4.4 at d = 2.7, 5 at the bin's far edge
    d2, s2 = draw(20000)  # fresh rows: coverage holds near and far
    covered = s2 <= w.factor(d2)[:, 0]
    for lo, hi in [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]:
        band = (d2 >= lo) & (d2 < hi)
        assert 0.87 <= covered[band].mean() <= 0.97, (lo, hi, covered[band].mean())
    assert np.isnan(w.factor(np.array([d.max() + 1e-6]))).all()


def test_widening_pools_adjacent_bins_that_break_monotonicity():
    rng = np.random.default_rng(1)
    d = np.repeat([1.0, 2.0, 3.0], 100) + rng.uniform(0, 0.5, size=300)
    s = np.concatenate([rng.uniform(0, 1, 100), 3.0 * rng.uniform(0, 1, 100), 2.0 * rng.uniform(0, 1, 100)])
    w = DistanceWidening(0.9, min_bin=100).fit(d, s)
    pooled = conformal_quantile(s[100:], 0.9)
    np.testing.assert_allclose(w.factor_[:, 0], [max(1.0, conformal_quantile(s[:100], 0.9)), pooled, pooled])


def test_widening_without_floor_narrows_where_the_calibrated_interval_over_covers():
    """Scores at half their nominal scale near the data: floor=None gives w ~ 0.5 there, the default stays 1."""
    rng = np.random.default_rng(3)
    d = rng.uniform(0.0, 2.0, size=4000)
    scale = np.where(d < 1.0, 0.5, 1.5)
    s = np.abs(rng.normal(size=d.size)) / 1.645 * scale
    floored, free = DistanceWidening(0.9).fit(d, s), DistanceWidening(0.9, floor=None).fit(d, s)
    assert floored.factor(np.array([0.5]))[0, 0] == 1.0
    assert 0.4 <= free.factor(np.array([0.5]))[0, 0] <= 0.6
    np.testing.assert_allclose(free.factor(np.array([1.5])), floored.factor(np.array([1.5])))
    d2 = rng.uniform(0.0, 2.0, size=20000)
    s2 = np.abs(rng.normal(size=d2.size)) / 1.645 * np.where(d2 < 1.0, 0.5, 1.5)
    near = d2 < 1.0
    assert 0.87 <= np.mean(s2[near] <= free.factor(d2[near])[:, 0]) <= 0.93
    assert np.mean(s2[near] <= floored.factor(d2[near])[:, 0]) > 0.99  # the floor over-covers here


def test_cross_conformal_scale_widens_and_nan_means_no_interval():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(300, 1))
    tree = ApplicabilityDomain().fit(x).tree
    cal = CrossConformal(0.9).fit(tree, x, rng.normal(scale=0.1, size=300), np.zeros(300))
    lo1, hi1 = cal.interval(tree, x[:3], np.zeros((3, 1)))
    lo, hi = cal.interval(tree, x[:3], np.zeros((3, 1)), np.zeros((3, 1)), np.array([[1.0], [2.0], [np.nan]]))
    assert hi[0, 0] == hi1[0, 0] and hi[1, 0] == pytest.approx(2 * hi1[1, 0]) and np.isnan([lo[2, 0], hi[2, 0]]).all()


def test_grouped_coverage_holds_with_widening_where_unwidened_intervals_under_cover(fitted):
    est, X, y, g = fitted
    held = np.isin(g, HELD_OUT)
    new, old = est.predict_dist(X[held]), _unwidened(est).predict_dist(X[held])
    ok = new.interval_ok
    assert ok.mean() >= 0.8  # most held-out rows are within the calibrated distances
    cov_new = empirical_coverage(y[held][ok], new.lower[ok], new.upper[ok])
    cov_old = empirical_coverage(y[held], old.lower, old.upper)
    assert cov_old < 0.8 and cov_new >= 0.85, (cov_old, cov_new)
    factor = est.widening_.factor_[:, 0]
    assert np.all(np.diff(factor) >= 0) and factor[0] <= 1.0 and factor[-1] > 1.5


def _pooled(est: MODNetRegressor) -> MODNetRegressor:
    """The same networks with the one-stage widening (w >= 1 on out-of-fold and out-of-group rows pooled)."""
    twin = copy.copy(est)
    twin.widening_form = "pooled"
    twin.widening_ = DistanceWidening(est.coverage).fit(*est.widening_calibration_)
    return twin


def test_in_domain_intervals_hold_nominal_coverage_and_are_narrower_than_pooled(fitted):
    est, *_ = fitted
    X, y, g = _clusters(1500, seed=5)  # fresh draws from the training clusters
    inside = ~np.isin(g, HELD_OUT)
    new, old, pooled = (e.predict_dist(X[inside]) for e in (est, _unwidened(est), _pooled(est)))
    assert np.all(new.interval_ok)
    cov = {name: empirical_coverage(y[inside], p.lower, p.upper)
           for name, p in (("new", new), ("old", old), ("pooled", pooled))}
    assert 0.86 <= cov["new"] <= 0.94 and cov["pooled"] > cov["new"], cov  # pooled over-covers near the data
    assert np.mean(new.upper - new.lower) < np.mean(pooled.upper - pooled.lower)
    w = est.widening_.factor(est._widening_distance(est._prepare(X[inside]), new.distance))[:, 0]
    hit_old = (y[inside] >= old.lower) & (y[inside] <= old.upper)
    assert hit_old[w > 1.5].mean() < 0.85  # where it widens in domain, the old interval under-covered


def test_two_stage_fit_brings_near_rows_to_nominal_and_far_rows_get_the_extra_width():
    """Out-of-fold scores at half their nominal scale near the data (d < 1); out-of-group rows at d > 1
    twice as large as out-of-fold rows at the same distance."""
    rng = np.random.default_rng(7)

    def fold_rows(n):
        d = rng.uniform(0.0, 2.0, size=n)
        return d, np.abs(rng.normal(size=n)) / 1.645 * np.where(d < 1.0, 0.5, 1.0)

    d_fold, s_fold = fold_rows(4000)
    d_group = rng.uniform(1.0, 3.0, size=4000)
    s_group = np.abs(rng.normal(size=4000)) / 1.645 * 2.0
    w = DistanceWidening(0.9).fit_two_stage(d_fold, s_fold, np.concatenate([d_fold, d_group]),
                                            np.concatenate([s_fold, s_group]))
    assert np.all(np.diff(w.factor_[:, 0]) >= 0) and w.max_distance == pytest.approx(d_group.max())
    assert 0.4 <= w.factor(np.array([0.5]))[0, 0] <= 0.6  # narrower than the unwidened interval near the data
    d2, s2 = fold_rows(20000)
    near = d2 < 1.0
    assert 0.87 <= np.mean(s2[near] <= w.factor(d2[near])[:, 0]) <= 0.93
    far = np.abs(rng.normal(size=20000)) / 1.645 * 2.0
    d3 = rng.uniform(2.2, 2.9, size=20000)
    assert np.mean(far <= w.factor(d3)[:, 0]) >= 0.87  # out-of-group rows far out keep their coverage
    np.testing.assert_array_equal(w.factor(np.array([3.5])), [[np.nan]])


def test_no_interval_beyond_the_calibrated_distance(fitted):
    est, X, *_ = fitted
    p = est.predict_dist(np.vstack([X[:2], 40.0 * X[:2]]))
    assert list(p.interval_ok) == [True, True, False, False]
    assert np.isfinite(p.lower[:2]).all() and np.isnan(p.lower[2:]).all() and np.isnan(p.upper[2:]).all()
    assert np.isfinite(p.mean).all() and p.distance[2] > est.widening_.max_distance
    assert list(p.interval_note) == ["", "", NO_INTERVAL_NOTE, NO_INTERVAL_NOTE]


def test_state_round_trip_keeps_the_widening_and_old_states_still_load(fitted):
    est, X, *_ = fitted
    rows = np.vstack([X[:20], 40.0 * X[:2]])
    tensors, meta = est.get_state()
    assert {"array.widening_edges", "array.widening_factor", "array.cv_fold"} <= set(tensors)
    back = MODNetRegressor.from_state(tensors, meta)
    a, b = est.predict_dist(rows), back.predict_dist(rows)
    np.testing.assert_array_equal(back.widening_.edges_, est.widening_.edges_)
    np.testing.assert_array_equal(back.widening_.factor_, est.widening_.factor_)
    np.testing.assert_allclose(b.mean, a.mean, rtol=0, atol=1e-5)  # float32 weights
    np.testing.assert_allclose(b.upper, a.upper, rtol=0, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(b.interval_ok, a.interval_ok)
    old_tensors = {k: v for k, v in tensors.items() if not k.startswith(("array.widening", "array.cv_fold"))}
    old_meta = {k: v for k, v in meta.items() if k != "widening_n_calibration"}
    old_meta["params"] = {k: v for k, v in meta["params"].items() if not k.startswith("widening")}
    old = MODNetRegressor.from_state(old_tensors, old_meta)
    c, d = old.predict_dist(rows), _unwidened(back).predict_dist(rows)
    assert old.widening_ is None and np.all(c.interval_ok) and np.isfinite(c.upper).all()
    np.testing.assert_array_equal(c.upper, d.upper)


def test_widening_off_fits_the_same_model_without_it():
    X, y, _ = _clusters(120, seed=3)
    on = MODNetRegressor(**TINY).fit(X, y)
    off = clone(on).set_params(widening=False).fit(X, y)
    assert on.widening_ is not None and off.widening_ is None
    a, b = _unwidened(on).predict_dist(X), off.predict_dist(X)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert "array.widening_edges" not in off.get_state()[0]
    split = clone(on).set_params(calibration="split").fit(X, y)  # split calibration: no widening
    assert split.widening_ is None and np.all(split.predict_dist(X).interval_ok)


def test_groups_define_the_widening_splits():
    X, y, g = _clusters(120, seed=4)
    est = MODNetRegressor(**TINY, widening_groups=3).fit(X, y, groups=g)
    split = est.widening_split_
    assert len(np.unique(split)) == 3
    assert all(len(np.unique(split[g == label])) == 1 for label in np.unique(g))
    with pytest.raises(ValueError, match="groups has"):
        clone(est).fit(X, y, groups=g[:10])


def test_feature_cleaner_does_the_imputation():
    X, y, _ = _clusters(120, seed=6)
    X = np.hstack([X, np.full((120, 1), np.nan), np.ones((120, 1))])  # all-NaN and constant columns
    X[::5, 0] = np.nan
    X[1::7, 1] = np.inf
    est = MODNetRegressor(**TINY).fit(X, y)
    assert isinstance(est.cleaner_, FeatureCleaner)
    assert est.selected_idx_.tolist() == [0, 1, 2, 3]  # the all-NaN and constant columns are dropped
    reference = FeatureCleaner().fit(X)
    np.testing.assert_array_equal(est.cleaner_.medians_, reference.medians_[:4])
    rows = X[:3].copy()
    rows[:, 0] = [np.nan, np.inf, -np.inf]
    filled = rows.copy()
    filled[:, 0] = reference.medians_[0]
    np.testing.assert_array_equal(est.predict(rows), est.predict(filled))


def test_models_saved_before_the_two_stage_form_load_as_pooled(fitted):
    """Their w(d) was fitted on AD distances with w >= 1, so they must keep reading it at the AD distance."""
    est, X, *_ = fitted
    tensors, meta = est.get_state()
    tensors = {k: v for k, v in tensors.items() if k != "array.cv_fold"}
    meta = {**meta, "params": {k: v for k, v in meta["params"].items() if k != "widening_form"}}
    old = MODNetRegressor.from_state(tensors, meta)
    Xn = old._prepare(X[:5])
    _, dist = old.domain_.in_domain(Xn)
    assert old.widening_form == "pooled" and old._widening_distance(Xn, dist) is dist
    assert not np.allclose(est._widening_distance(Xn, dist), dist)  # the two-stage form reads a different one


@pytest.mark.parametrize("n", [5, 19, 50, 333])
def test_equal_weights_give_the_unweighted_conformal_quantile(n):
    scores = np.random.default_rng(n).exponential(size=n)
    for weight in (1.0, 0.01, 7.0):
        assert conformal_quantile(scores, 0.9, np.full(n, weight)) == conformal_quantile(scores, 0.9)


def test_a_large_family_weighted_as_one_row_no_longer_sets_the_quantile():
    """400 near-copies that are predicted well and 40 distinct rows that are not: counted by rows the
    family hides the distinct rows' errors; weighted 1/400 each it weighs as one row."""
    rng = np.random.default_rng(3)
    family, distinct = rng.uniform(0.0, 0.2, 400), rng.uniform(1.0, 3.0, 40)
    scores = np.concatenate([family, distinct])
    weights = np.concatenate([np.full(400, 1 / 400), np.ones(40)])
    assert conformal_quantile(scores, 0.9) < 0.2
    assert conformal_quantile(scores, 0.9, weights) == pytest.approx(conformal_quantile(
        np.concatenate([[0.1], distinct]), 0.9), abs=0.3)
    assert conformal_quantile(scores, 0.9, weights) > 2.0
    # the widening's bins use the same weights
    distance = np.concatenate([np.full(400, 0.5), rng.uniform(0.4, 0.6, 40)])
    plain = DistanceWidening(0.9, min_bin=440, floor=None).fit(distance, scores)
    weighted = DistanceWidening(0.9, min_bin=440, floor=None).fit(distance, scores, weights)
    assert weighted.factor_[0, 0] > plain.factor_[0, 0]
    with pytest.raises(ValueError, match="weights"):
        conformal_quantile(scores, 0.9, -weights)
    with pytest.raises(ValueError, match="weights has 3 values for 440"):
        DistanceWidening(0.9).fit(distance, scores, np.ones(3))
