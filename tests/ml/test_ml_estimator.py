"""MODNetRegressor as a scikit-learn estimator, and its calibrated uncertainty.

scikit-learn's estimator checks run on a tiny configuration (two 8-neuron members, 5 epochs, selection
off so no k-NN MI is needed on the checks' 20-row data). Skipped: none. Score-based expectations are
relaxed through the ``poor_score`` tag because a 5-epoch network on 20 rows promises no R²; selection is
covered by its own test below and by tests/ml/test_ml_selection.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from matflow.ml.estimator import MODNetRegressor
from matflow.ml.uncertainty import (
    ApplicabilityDomain,
    ConformalCalibrator,
    CrossConformal,
    conformal_quantile,
    empirical_coverage,
    knn_difficulty,
)

TINY = dict(n_features=None, widths=((8,), (8,), (4,)), epochs=5, patience=3, n_estimators=2, batch_size=16)


@parametrize_with_checks([MODNetRegressor(**TINY)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _regression(n=300, seed=0, noise=0.2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = 2 * np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3] + noise * rng.normal(size=n)
    return X, y


def test_clone_pipeline_and_cross_val_score():
    X, y = _regression(200)
    est = MODNetRegressor(n_features=4, widths=((16,), (8,), (4,)), epochs=200, patience=30, n_estimators=2,
                          lr=3e-3, batch_size=16)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "nets_")
    twin.set_params(n_features=3)
    assert twin.n_features == 3 and est.n_features == 4
    pipe = Pipeline([("scale", StandardScaler()), ("modnet", est)])
    scores = cross_val_score(pipe, X, y, cv=3, scoring="neg_mean_absolute_error")
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    baseline = np.mean(np.abs(y - y.mean()))
    assert -scores.mean() < baseline  # learns something


def test_selection_inside_estimator_and_nan_inputs():
    X, y = _regression(250)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    frame.iloc[::7, 5] = np.nan
    est = MODNetRegressor(n_features=3, widths=((16,), (8,), (4,)), epochs=30, patience=10, n_estimators=2)
    est.fit(frame, y)
    assert len(est.selected_names_) == 3 and "f0" in est.selected_names_
    assert est.relevance_.shape == (3,)
    pred = est.predict(frame)
    assert pred.shape == (250,) and np.all(np.isfinite(pred))
    with pytest.raises(ValueError):
        est.predict(frame.rename(columns={"f0": "zz"}))  # feature names are checked


def test_conformal_quantile_is_finite_sample_correct():
    scores = np.arange(1, 20, dtype=float)  # n = 19: (n + 1) * 0.9 = 18 -> 18th smallest
    assert conformal_quantile(scores, 0.9) == 18.0
    assert conformal_quantile(scores[:5], 0.9) == np.inf  # too few points for 90 %
    with pytest.raises(ValueError):
        conformal_quantile(scores, 1.5)


def test_conformal_calibrator_coverage_on_synthetic_heteroscedastic_problem():
    """Many calibration/test splits of a problem whose std is known up to a wrong factor."""
    rng = np.random.default_rng(0)
    covs = []
    for _ in range(200):
        sigma = rng.uniform(0.2, 2.0, size=600)
        y = rng.normal(0.0, sigma)
        mean, std = np.zeros(600), 0.5 * sigma  # the ensemble underestimates spread 2x
        cal = ConformalCalibrator(0.9).fit(y[:200], mean[:200], std[:200])
        lo, hi = cal.interval(mean[200:], std[200:])
        covs.append(empirical_coverage(y[200:], lo, hi))
    assert 0.89 <= np.mean(covs) <= 0.91
    naive = np.mean(np.abs(y) <= 1.645 * 0.5 * sigma)  # uncalibrated Gaussian interval under-covers
    assert naive < 0.7


def test_knn_difficulty_leaves_the_row_itself_out():
    X = np.arange(6, dtype=float)[:, None]
    residuals = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    tree = ApplicabilityDomain(2).fit(X).tree
    with_self = knn_difficulty(tree, residuals, X, 2)
    without = knn_difficulty(tree, residuals, X, 2, exclude=np.arange(6))
    assert with_self[0, 0] == pytest.approx(50.5)  # itself and row 1
    assert without[0, 0] == pytest.approx(1.5)  # rows 1 and 2: its own 100 never enters
    assert without[3, 0] == pytest.approx(3.0)  # rows 2 and 4
    # a duplicate of a reference row: the other copy still counts, the row itself does not
    X2 = np.array([[0.0], [0.0], [5.0]])
    tree2 = ApplicabilityDomain(1).fit(X2).tree
    got = knn_difficulty(tree2, np.array([7.0, 9.0, 1.0]), X2, 1, exclude=np.arange(3))
    assert list(got[:2, 0]) == [9.0, 7.0]


def test_cross_conformal_covers_and_adapts_on_synthetic_heteroscedastic_problem():
    """A perfect mean with noise whose scale grows 10x along x: right coverage, and wider where noisier."""
    rng = np.random.default_rng(0)
    covs, ratios = [], []
    for _ in range(40):
        x = rng.uniform(0.0, 1.0, size=(1600, 1))
        sigma = 0.2 + 1.8 * x[:, 0]
        y = rng.normal(0.0, sigma)
        tree = ApplicabilityDomain().fit(x[:800]).tree
        cal = CrossConformal(0.9, n_neighbors=50).fit(tree, x[:800], y[:800], np.zeros(800))
        lo, hi = cal.interval(tree, x[800:], np.zeros((800, 1)))
        covs.append(empirical_coverage(y[800:], lo[:, 0], hi[:, 0]))
        width = (hi - lo)[:, 0]
        ratios.append(width[x[800:, 0] > 0.8].mean() / width[x[800:, 0] < 0.2].mean())
    assert 0.885 <= np.mean(covs) <= 0.915
    assert np.mean(ratios) > 4.0  # a global (unnormalised) interval would give 1


def test_cross_conformal_accounts_for_the_gain_of_averaging_folds():
    """Scores come from one fold's prediction; the mean over 5 folds is better: raw intervals over-cover."""
    rng = np.random.default_rng(1)
    n, folds = 3000, 5
    x = rng.uniform(size=(2 * n, 1))
    y = rng.normal(size=2 * n)
    fold_preds = rng.normal(size=(folds, 2 * n, 1))  # each fold's members err independently, var 1
    oof = fold_preds[np.arange(n) % folds, np.arange(n)]
    tree = ApplicabilityDomain().fit(x[:n]).tree
    mean = fold_preds[:, n:].mean(axis=0)
    raw = CrossConformal(0.9, n_neighbors=100).fit(tree, x[:n], y[:n], oof)
    lo, hi = raw.interval(tree, x[n:], mean)
    assert raw.shrink_[0] == 1.0 and empirical_coverage(y[n:], lo[:, 0], hi[:, 0]) > 0.95
    cal = CrossConformal(0.9, n_neighbors=100).fit(tree, x[:n], y[:n], oof, fold_preds[:, :n])
    lo, hi = cal.interval(tree, x[n:], mean)
    assert cal.shrink_[0] == pytest.approx(np.sqrt(1.2 / 2.0), rel=0.05)  # error variance 1 + 1/5 vs 1 + 1
    assert 0.88 <= empirical_coverage(y[n:], lo[:, 0], hi[:, 0]) <= 0.92


def test_cross_conformal_interval_never_narrower_than_member_disagreement():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(300, 1))
    tree = ApplicabilityDomain().fit(x).tree
    cal = CrossConformal(0.9).fit(tree, x, rng.normal(scale=0.1, size=300), np.zeros(300))
    far = np.array([[50.0], [0.5]])
    spread = np.array([[5.0], [0.0]])  # members disagree wildly on the far input only
    lo, hi = cal.interval(tree, far, np.zeros((2, 1)), spread)
    assert hi[0, 0] == pytest.approx(1.645 * 5.0, rel=1e-3)
    lo_ns, hi_ns = cal.interval(tree, far, np.zeros((2, 1)))
    assert hi_ns[0, 0] < 1.0 and hi[1, 0] == hi_ns[1, 0]  # without it: a narrow interval far away


def test_cross_calibration_uses_every_row_out_of_fold():
    X, y = _regression(120, seed=3)
    est = MODNetRegressor(**{**TINY, "epochs": 20, "n_estimators": 4}, cv_folds=2).fit(X, y)
    assert 0.5 <= est.calibrator_.shrink_[0] <= 1.0
    assert est.calibrated_ and est.calibrator_.n_calibration_ == 120 and est.calibration_ == "cross"
    assert clone(est).set_params(n_estimators=1, epochs=2).fit(X, y).calibration_ == "split"  # one member
    assert np.bincount(est.cv_fold_).tolist() == [60, 60]
    members = est._members(est._prepare(X))[:, :, 0]  # (4 members, rows)
    skipped_by = [members[[m for m in range(4) if m % 2 == f]].mean(axis=0) for f in range(2)]
    oof = np.where(est.cv_fold_ == 0, skipped_by[0], skipped_by[1])
    np.testing.assert_allclose(est.calibrator_.residuals_[:, 0], np.abs(y - oof), rtol=1e-9, atol=1e-12)
    p = est.predict_dist(X)
    assert np.all(p.lower < p.mean) and np.all(p.mean < p.upper)
    far = est.predict_dist(X[:5] * 50.0)  # beyond every calibration distance: no interval at all
    assert not far.in_domain.any() and not far.interval_ok.any()
    assert np.isnan(far.lower).all() and np.isnan(far.upper).all() and np.isfinite(far.mean).all()
    est.widening_ = None  # the unwidened intervals: out of domain at least z x the members' spread
    far = est.predict_dist(X[:5] * 50.0)
    assert np.all(far.upper - far.mean >= 1.645 * far.std * (1 - 1e-9))


def test_estimator_interval_coverage_on_held_out_data():
    X, y = _regression(1400, seed=1, noise=0.4)
    est = MODNetRegressor(n_features=None, widths=((32,), (16,), (8,)), epochs=60, patience=10,
                          n_estimators=3, calib_fraction=0.3, batch_size=64)
    covs = []
    for k in range(2):
        test = np.arange(k * 400, (k + 1) * 400)
        train = np.setdiff1d(np.arange(1400), test)
        est.set_params(random_state=k).fit(X[train], y[train])
        p = est.predict_dist(X[test])
        assert p.calibrated and p.coverage == 0.9
        assert np.all(p.lower <= p.mean) and np.all(p.mean <= p.upper)
        covs.append(empirical_coverage(y[test], p.lower, p.upper))
    assert 0.85 <= np.mean(covs) <= 0.95


def test_applicability_domain_flags_far_points():
    rng = np.random.default_rng(0)
    train = rng.uniform(-0.5, 0.5, size=(300, 3))
    ad = ApplicabilityDomain(5, 0.95).fit(train)
    ok, dist = ad.in_domain(np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]))
    assert list(ok) == [True, False] and dist[1] > dist[0]
    assert 0.9 <= ad.in_domain(rng.uniform(-0.5, 0.5, size=(500, 3)))[0].mean() <= 1.0


def test_small_data_falls_back_to_uncalibrated_intervals():
    X, y = _regression(15)  # cross: all 15 rows would calibrate, fewer than min_calibration = 20
    p = MODNetRegressor(**TINY).fit(X, y).predict_dist(X)
    assert not p.calibrated and np.all(p.upper >= p.lower)
    X, y = _regression(30)  # split: 15 % of 30 rows would calibrate
    p = MODNetRegressor(**TINY, calibration="split").fit(X, y).predict_dist(X)
    assert not p.calibrated and np.all(p.upper >= p.lower)


def test_log_target_and_mae_loss_options():
    X, y = _regression(200)
    y_pos = np.exp(0.5 * y)
    est = MODNetRegressor(**{**TINY, "epochs": 20}, loss="mae", target_transform="log").fit(X, y_pos)
    p = est.predict_dist(X)
    assert np.all(p.lower > 0) and np.all(p.lower <= p.mean) and np.all(p.mean <= p.upper)
    with pytest.raises(ValueError, match="strictly positive"):
        clone(est).fit(X, y)
    with pytest.raises(ValueError, match="loss must be"):
        MODNetRegressor(**TINY, loss="huber").fit(X, y)
