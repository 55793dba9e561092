"""``MODNetSearch``: the choice rule, determinism, the resumable cache, and a problem with a clear winner.

Tiny synthetic data (in code) and tiny networks, so each search takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from matflow.ml.estimator import MODNetRegressor
from matflow.ml.search import MODNetSearch, select_best

BASE = {"n_features": None, "widths": ((16,), (8,), (4,)), "epochs": 15, "patience": 15, "batch_size": 8,
        "n_estimators": 2, "loss": "mse", "min_calibration": 5}


def _problem(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    y = 5.0 * X["a"].to_numpy() + 0.1 * rng.normal(size=n)
    return X, y


def _search(tmp_path, **kw) -> MODNetSearch:
    args = {"space": {"lr": (1e-6, 3e-2), "batch_size": (8, 16)}, "base_params": BASE, "budget": 2,
            "inner_folds": 2, "cache_dir": str(tmp_path / "search"), "random_state": 0}
    return MODNetSearch(**{**args, **kw})


def _record(mae, cov, n_est=5):
    return {"inner_mae": mae, "inner_coverage": cov, "params": {"n_estimators": n_est}}


def test_select_best_prefers_coverage_in_band_then_mae_then_more_members():
    band = (0.85, 0.95)
    # the lowest MAE has coverage 0.6: out of the band, so not chosen while others are in it
    assert select_best([_record(1.0, 0.6), _record(2.0, 0.9), _record(1.5, 0.88)], band) == 2
    # nothing in the band: the lowest MAE
    assert select_best([_record(3.0, 0.5), _record(1.0, 0.99), _record(2.0, 0.7)], band) == 1
    # equal scores (identical inner fits): more members
    assert select_best([_record(1.0, 0.9, 3), _record(1.0, 0.9, 10), _record(1.0, 0.9, 5)], band) == 1
    assert select_best([_record(float("nan"), 0.9), _record(4.0, 0.9)], band) == 1


def test_search_picks_the_clearly_better_candidate_under_the_coverage_rule(tmp_path):
    X, y = _problem()
    s = _search(tmp_path, space={"lr": (1e-6, 3e-2)}, base_params={**BASE, "lr": 1e-6, "calibration": "split"},
                inner_epoch_fraction=1.0).fit(X, y)
    res = s.cv_results_
    lrs = [p["lr"] for p in res["params"]]
    assert sorted(lrs) == [1e-6, 3e-2]
    good, bad = res["inner_mae"][lrs.index(3e-2)], res["inner_mae"][lrs.index(1e-6)]
    assert good < 0.5 * bad  # the learning rate that learns nothing is clearly worse
    in_band = [0.85 <= c <= 0.95 for c in res["inner_coverage"]]
    pool = [i for i in range(len(lrs)) if in_band[i]] or list(range(len(lrs)))
    assert s.best_index_ == min(pool, key=lambda i: res["inner_mae"][i])
    if in_band[lrs.index(3e-2)] or not any(in_band):
        assert s.best_params_["lr"] == 3e-2
    # the refit is a plain MODNetRegressor with the chosen settings, fitted on every row given
    assert isinstance(s.best_estimator_, MODNetRegressor)
    assert s.best_estimator_.lr == s.best_params_["lr"] and s.best_estimator_.n_features_in_ == 4
    assert s.best_estimator_.epochs == BASE["epochs"]  # full settings, not the cheaper inner ones
    np.testing.assert_allclose(s.predict(X), s.best_estimator_.predict(X))
    assert s.predict_dist(X.iloc[:3]).lower.shape == (3,)
    assert clone(s).get_params()["budget"] == 2 and not hasattr(clone(s), "best_estimator_")


def test_search_is_deterministic_for_a_seed(tmp_path):
    X, y = _problem()
    a = _search(tmp_path, cache=False).fit(X, y)
    b = _search(tmp_path, cache=False).fit(X, y)
    assert a.cv_results_["params"] == b.cv_results_["params"]
    assert a.cv_results_["inner_mae"] == b.cv_results_["inner_mae"]
    assert a.best_params_ == b.best_params_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert not (tmp_path / "search").exists()  # cache=False writes nothing


def test_killed_search_resumes_from_the_cache_without_refitting(tmp_path, monkeypatch):
    X, y = _problem()
    real_fit = MODNetRegressor.fit
    calls = []

    def counting_fit(self, X, y):
        calls.append(len(X))
        if kill_at and len(calls) == kill_at:
            raise KeyboardInterrupt
        return real_fit(self, X, y)

    monkeypatch.setattr(MODNetRegressor, "fit", counting_fit)
    kill_at = 5  # 2 inner folds: candidates 1 and 2 finish (4 fits), candidate 3 dies in its first fit
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, budget=3).fit(X, y)
    assert len(list((tmp_path / "search").glob("*.json"))) == 2
    calls.clear()
    kill_at = None
    s = _search(tmp_path, budget=3).fit(X, y)
    assert len(calls) == 2 + 1  # candidate 3's two inner fits, then the refit on all rows
    assert s.cv_results_["from_cache"] == [True, True, False]
    calls.clear()
    again = _search(tmp_path, budget=3).fit(X, y)
    assert len(calls) == 1 and all(again.cv_results_["from_cache"])  # only the refit
    assert again.best_params_ == s.best_params_
    # a different seed means other inner folds: nothing is reused
    calls.clear()
    _search(tmp_path, budget=1, random_state=1).fit(X, y)
    assert len(calls) == 2 + 1


def test_search_space_is_validated(tmp_path):
    X, y = _problem(12)
    with pytest.raises(ValueError, match="not searchable"):
        _search(tmp_path, space={"learning_rate": (1e-3,)}).fit(X, y)
    with pytest.raises(ValueError, match="unknown activation"):
        _search(tmp_path, space={"activation": ("gelu",)}).fit(X, y)
    with pytest.raises(ValueError, match="at least 8 rows"):
        _search(tmp_path, inner_folds=4).fit(X.iloc[:6], y[:6])
