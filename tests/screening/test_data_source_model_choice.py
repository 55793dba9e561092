"""The data source's model family (gradient boosting, random forest or both) chosen on the training
rows: the choice follows the held-out inner Brier, "both" is the mean of the two, fits repeat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import GroupKFold

from matflow.screening.data import load_phase_labels
from matflow.screening.sources.classifier import (
    DataSource,
    _fold_brier,
    _ModelFamilyChoice,
)


def _threshold_problem(n: int = 400, seed: int = 0):
    """Binary target from an axis-aligned threshold on one of five features, 10 % label noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 2] > 0.3).astype(int)
    flip = rng.random(n) < 0.1
    y[flip] = 1 - y[flip]
    groups = np.arange(n) // 4
    return X, y, list(GroupKFold(3).split(X, y, groups))


def _bases(weak: str | None = None) -> dict:
    """Both families; ``weak`` names one that cannot split (leaves larger than the data), so it
    predicts a constant and the other must win by a wide margin."""
    hgb = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    rf = RandomForestClassifier(n_estimators=60, min_samples_leaf=2, random_state=0, n_jobs=1)
    if weak == "hgb":
        hgb = HistGradientBoostingClassifier(max_iter=5, min_samples_leaf=10_000, random_state=0)
    if weak == "rf":
        rf = RandomForestClassifier(n_estimators=5, min_samples_leaf=10_000, random_state=0)
    return {"hgb": hgb, "rf": rf}


@pytest.mark.parametrize(("weak", "winner"), [("hgb", "rf"), ("rf", "hgb")])
def test_auto_picks_the_family_with_the_lower_inner_brier(weak, winner) -> None:
    X, y, splits = _threshold_problem()
    choice = _ModelFamilyChoice(_bases(weak), "auto", "auto", splits).fit(X, y)
    scores = choice.model_scores_
    assert set(scores) == {"hgb", "rf", "both"}
    assert choice.model_ == min(scores, key=scores.get) == winner
    assert scores[weak] > scores[winner] + 0.1  # a clear win, not a tie broken by order
    assert set(choice.members_) == {winner}  # the losing family is not kept
    p = choice.predict_proba(X)
    assert p.shape == (len(y), 2) and np.allclose(p.sum(axis=1), 1.0)


def test_both_is_the_mean_of_the_two_calibrated_families() -> None:
    X, y, splits = _threshold_problem(seed=1)
    both = _ModelFamilyChoice(_bases(), "both", "auto", splits).fit(X, y)
    hgb = _ModelFamilyChoice(_bases(), "hgb", "auto", splits).fit(X, y)
    rf = _ModelFamilyChoice(_bases(), "rf", "auto", splits).fit(X, y)
    assert both.model_ == "both" and set(both.members_) == {"hgb", "rf"}
    assert set(hgb.model_scores_) == {"hgb"} and set(rf.model_scores_) == {"rf"}
    expected = (hgb.predict_proba(X) + rf.predict_proba(X)) / 2.0
    assert np.allclose(both.predict_proba(X), expected)
    # its inner score is the Brier of the averaged held-out probabilities, not the mean of Briers
    onehot = np.column_stack([y == 0, y == 1]).astype(float)
    held = (both.members_["hgb"].held_out_proba() + both.members_["rf"].held_out_proba()) / 2.0
    assert both.model_scores_["both"] == pytest.approx(_fold_brier(held, onehot, splits))
    assert both.model_scores_["hgb"] == pytest.approx(hgb.model_scores_["hgb"])


@pytest.fixture(scope="module")
def small_labels() -> pd.DataFrame:
    labels = load_phase_labels()
    groups = labels["element_set"].drop_duplicates().sample(n=60, random_state=3)
    return labels[labels["element_set"].isin(groups)].head(240).reset_index(drop=True)


def test_data_source_records_its_choice_per_classifier_and_is_deterministic(small_labels) -> None:
    comps, phases = list(small_labels["composition"]), small_labels["phase"]
    source = DataSource(max_iter=30, rf_n_estimators=50)
    first = source.fit(comps, phases)
    choice = first.model_choice_
    assert set(choice) == {"single_phase", "lattice"}
    for record in choice.values():
        assert set(record["inner_brier"]) == {"hgb", "rf", "both"}
        assert record["model"] == min(record["inner_brier"], key=record["inner_brier"].get)
        assert set(record["calibration"]) == {"hgb", "rf"}
    info = first.explain(comps[0])
    assert info["model_single_phase"] == choice["single_phase"]["model"]
    assert info["model_lattice"] == choice["lattice"]["model"]
    masses = first.masses(comps[:30])
    again = clone(source).fit(comps, phases)
    assert again.model_choice_ == choice
    assert np.array_equal(again.masses(comps[:30]), masses)
    forest = DataSource(max_iter=30, rf_n_estimators=50, model="rf").fit(comps, phases)
    assert forest.model_choice_["single_phase"]["model"] == "rf"
    assert set(forest.model_choice_["single_phase"]["inner_brier"]) == {"rf"}
    assert forest.model_choice_["single_phase"]["inner_brier"]["rf"] == pytest.approx(
        choice["single_phase"]["inner_brier"]["rf"], abs=1e-6)


def test_folds_missing_a_class_fall_back_to_averaged_fold_models(small_labels) -> None:
    """HCP only in one element set: the inner fold holding it out trains without HCP, so the
    lattice folds do not partition the rows and there is no held-out choice to make."""
    labels = load_phase_labels()
    hcp = labels[labels["element_set"] == "Mo-Ru"]
    rows = pd.concat([small_labels[small_labels["phase"] != "HCP"], hcp], ignore_index=True)
    comps, phases = list(rows["composition"]), rows["phase"]
    auto = DataSource(max_iter=30, rf_n_estimators=50).fit(comps, phases)
    assert auto.model_choice_["lattice"]["model"] == "hgb"
    assert "no held-out choice" in auto.model_choice_["lattice"]["reason"]
    both = DataSource(max_iter=30, rf_n_estimators=50, model="both").fit(comps, phases)
    assert both.model_choice_["lattice"]["model"] == "both"
    m = both.masses(comps[:10])
    assert np.allclose(m.sum(axis=1), 1.0) and (m >= 0).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [({"model": "xgb"}, "model 'xgb': expected one of auto, hgb, rf, both"),
     ({"rf_n_estimators": 0}, "rf_n_estimators 0"),
     ({"rf_min_samples_leaf": 1.5}, "rf_min_samples_leaf 1.5")],
)
def test_bad_model_parameters_are_refused(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        DataSource(**params).fit([{"Co": 0.5, "Ni": 0.5}], ["FCC"])
