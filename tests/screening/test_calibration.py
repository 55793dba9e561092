"""The data source's out-of-group calibration: the method chosen on the training rows, valid
probabilities, and sigmoid keeping the model's ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from matflow.screening.sources.classifier import DataSource, _OutOfGroupCalibrated


def _problem(n: int, n_classes: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    logits = np.column_stack([X @ rng.normal(size=3) * (k + 1) for k in range(n_classes)])
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(n_classes, p=row) for row in p])
    groups = np.arange(n) // 5
    splits = list(GroupKFold(3).split(X, y, groups))
    return X, y, splits


def test_auto_picks_the_lower_inner_brier_and_probabilities_are_valid():
    X, y, splits = _problem(300, n_classes=3)
    model = _OutOfGroupCalibrated(LogisticRegression(), "auto", splits).fit(X, y)
    scores = model.calibration_scores_
    assert set(scores) == {"sigmoid", "isotonic"}
    assert model.calibration_ == min(scores, key=scores.get)
    p = model.predict_proba(X)
    assert p.shape == (300, 3) and np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)


def test_small_logistic_problem_prefers_sigmoid():
    """With 60 rows drawn from a logistic model, isotonic's free steps overfit the inner folds."""
    wins = 0
    for seed in range(5):
        X, y, splits = _problem(60, seed=seed)
        wins += _OutOfGroupCalibrated(LogisticRegression(), "auto", splits).fit(X, y).calibration_ == "sigmoid"
    assert wins >= 4


def test_sigmoid_keeps_the_ranking_and_a_fixed_method_is_respected():
    X, y, splits = _problem(400, seed=3)
    model = _OutOfGroupCalibrated(LogisticRegression(), "sigmoid", splits).fit(X, y)
    assert model.calibration_ == "sigmoid" and model.calibration_scores_ == {}
    raw = model.model_.decision_function(X)
    assert roc_auc_score(y, model.predict_proba(X)[:, 1]) == pytest.approx(roc_auc_score(y, raw))
    iso = _OutOfGroupCalibrated(LogisticRegression(), "isotonic", splits).fit(X, y)
    assert iso.calibration_ == "isotonic"


def test_unknown_calibration_is_refused():
    with pytest.raises(ValueError, match="calibration 'beta'"):
        DataSource(calibration="beta").fit([{"Co": 0.5, "Ni": 0.5}], ["FCC"])
