"""Every label-using step of the pipeline is fitted inside the fold it is evaluated on.

Spies on ``MODNetRegressor.fit`` (imputation, selection, scaling, early stopping, calibration all happen
in it) and on ``NMIFeatureSelector.fit`` record the rows and labels each fit sees; no fit made while a
fold is evaluated, including every fit of the nested search, may see one of that fold's test labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from matflow.ml import train as pipeline
from matflow.ml.estimator import MODNetRegressor
from matflow.ml.selection import NMIFeatureSelector

TINY = {"n_features": 8, "widths": ((16,), (8,), (4,)), "epochs": 16, "patience": 4, "batch_size": 16,
        "n_estimators": 2, "min_calibration": 5}
FOLDS = [(np.arange(20, 60), np.arange(0, 20)), (np.arange(0, 40), np.arange(40, 60))]
SPACE = {"n_features": (4, 8), "calibration": ("cross", "split"), "lr": (1e-3, 3e-3)}


@pytest.fixture
def spies(monkeypatch):
    events: list[tuple] = []
    real_fit, real_select = MODNetRegressor.fit, NMIFeatureSelector.fit

    def fit(self, X, y):
        events.append(("fit", np.asarray(X.index), np.asarray(y, dtype=float).ravel()))
        return real_fit(self, X, y)

    def select(self, X, y):
        events.append(("select", None, np.asarray(y, dtype=float).ravel()))
        return real_select(self, X, y)

    monkeypatch.setattr(MODNetRegressor, "fit", fit)
    monkeypatch.setattr(NMIFeatureSelector, "fit", select)
    return events


def _check_no_test_label_seen(events: list[tuple], data, n_folds: int) -> int:
    """Split the events at the per-fold log lines and check each fold's fits; returns the fits checked."""
    fold, checked = 0, 0
    for kind, index, y in events:
        if kind == "log":
            fold += 1
            continue
        train_pos, test_pos = FOLDS[fold]
        train_labels = set(np.asarray(data.Y, dtype=float)[train_pos].tolist())
        if index is not None:  # a fit given a frame: its row labels must be training rows of this fold
            assert set(index.tolist()) <= set(train_pos.tolist()), f"fold {fold}: a fit saw test rows"
            np.testing.assert_array_equal(y, np.asarray(data.Y, dtype=float)[index])
        assert set(y.tolist()) <= train_labels, f"fold {fold}: a {kind} saw a test label"
        checked += 1
    assert fold == n_folds
    return checked


@pytest.mark.parametrize("search", [False, True], ids=["fixed", "nested-search"])
def test_label_using_steps_see_only_the_folds_training_rows(spies, search):
    data = pipeline.featurize_dataset("alexandria_cv300", "composition", limit=60)
    assert np.array_equal(data.row_index, np.arange(60))  # positions = row labels of data.X
    log = lambda m: spies.append(("log", None, None)) if ": MAE" in m else None  # noqa: E731
    result = pipeline.run_training("alexandria_cv300", preset="composition", config=TINY, limit=60, evaluate=True,
                                   register_model=False, folds=FOLDS, search=search, budget=2,
                                   search_options={"space": SPACE, "inner_folds": 2, "cache": False}, log=log)
    checked = _check_no_test_label_seen(spies, data, len(FOLDS))
    fits = sum(1 for e in spies if e[0] == "fit")
    selects = sum(1 for e in spies if e[0] == "select")
    # fixed: one fit per fold; nested: 2 candidates x 2 inner folds + the refit, per fold
    assert fits == (2 * (2 * 2 + 1) if search else 2) and selects >= 1 and checked == fits + selects
    cv = result["cv"]
    assert [f["n_test"] for f in cv["folds"]] == [20, 20] and result["path"] is None
    if search:
        for f in cv["folds"]:
            assert f["search"]["n_rows"] == 40 and set(f["search"]["best_params"]) == set(SPACE)
        assert "sees only the outer training rows" in result["metrics"]["cv_protocol"]
    else:
        assert "fixed configuration" in result["metrics"]["cv_protocol"]
