"""NMI feature selection: the k-NN estimator, cross-NMI matrix and cache, and the MODNet ranking rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import mutual_info_regression

from matflow.ml.selection import (
    NMIFeatureSelector,
    cached_cross_nmi,
    cross_nmi,
    ksg_mi,
    merge_round_robin,
    prepare_columns,
    rank_features,
    rr_schedule,
)


def _toy(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """y depends strongly on a, weakly on b; a_copy duplicates a; noise is independent of y."""
    rng = np.random.default_rng(seed)
    a, b, c, noise = (rng.normal(size=n) for _ in range(4))
    y = 3.0 * np.tanh(a) + 1.2 * b + 0.9 * c + 0.1 * rng.normal(size=n)
    X = pd.DataFrame({"noise": noise, "b": b, "a": a, "a_copy": 2.0 * a + 1.0 + 1e-6 * rng.normal(size=n),
                      "c": c})
    return X, y


def test_ksg_matches_scikit_learn_estimator():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = np.sin(2 * x) + 0.3 * rng.normal(size=300)
    P = prepare_columns(np.column_stack([x, y]), 0)
    ours = ksg_mi(P[:, 0], P[:, 1])
    ref = mutual_info_regression(x[:, None], y, n_neighbors=3, random_state=0)[0]
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ours > 0.3  # clearly dependent


def test_rr_schedule_follows_modnet():
    assert rr_schedule(0) == (4.5, 0.0)
    p, c = rr_schedule(10)
    assert p == pytest.approx(4.5 - 0.4 * 10 ** 0.4)
    assert c == pytest.approx(1e-3)
    assert rr_schedule(10_000) == (0.1, 1e5)


def test_cross_nmi_is_symmetric_deterministic_and_sees_duplicates():
    X, _ = _toy()
    m1 = cross_nmi(X, random_state=3)
    m2 = cross_nmi(X, random_state=3)
    pd.testing.assert_frame_equal(m1, m2)
    assert np.allclose(m1.to_numpy(), m1.to_numpy().T)
    assert np.allclose(np.diag(m1.to_numpy()), 1.0)
    assert m1.loc["a", "a_copy"] > 0.8
    assert m1.loc["a", "noise"] < 0.1


def test_cross_nmi_subsamples_rows_and_refuses_nan():
    X, _ = _toy(n=300)
    small = cross_nmi(X, max_rows=100, random_state=0)
    assert small.shape == (5, 5)
    with pytest.raises(ValueError, match="NaN"):
        cross_nmi(X.assign(a=np.nan))


def test_cached_cross_nmi_round_trips(tmp_path):
    X, _ = _toy(n=200)
    first = cached_cross_nmi(X, "toy", "none", cache_dir=tmp_path)
    files = list((tmp_path / "nmi").glob("toy__none__*.npz"))
    assert len(files) == 1
    again = cached_cross_nmi(X, "toy", "none", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(first, again)
    cached_cross_nmi(X * 2.0, "toy", "none", cache_dir=tmp_path)  # different data -> new entry
    assert len(list((tmp_path / "nmi").glob("*.npz"))) == 2


def test_selection_on_hand_made_case():
    X, y = _toy()
    sel = NMIFeatureSelector(n_features=3).fit(X, y)
    names = list(X.columns)
    ranked = [names[i] for i in sel.ranking_]
    assert ranked[0] in {"a", "a_copy"}  # the known-relevant feature (or its twin) comes first
    assert ranked[-1] == "noise"  # pure noise ranks last
    chosen = [names[i] for i in sel.selected_]
    assert len({"a", "a_copy"} & set(chosen)) == 1  # a duplicated feature is not selected twice
    assert set(chosen) - {"a", "a_copy"} == {"b", "c"}
    assert sel.transform(X.to_numpy()).shape == (len(X), 3)
    assert sel.get_support().sum() == 3


def test_selection_without_redundancy_penalty_would_pick_the_duplicate():
    """Control for the test above: by relevance alone a_copy is second, so the penalty is what drops it."""
    X, y = _toy()
    rel = mutual_info_regression(X.to_numpy(), y, n_neighbors=3, random_state=0)
    order = [X.columns[i] for i in np.argsort(-rel)]
    assert set(order[:2]) == {"a", "a_copy"}


def test_rank_features_redundancy_and_constant_features():
    relevance = np.array([0.9, 0.85, 0.5, 0.0])
    cross = np.array([[1.0, 0.95, 0.1, 0.0], [0.95, 1.0, 0.1, 0.0], [0.1, 0.1, 1.0, 0.0], [0, 0, 0, 1.0]])
    assert list(rank_features(relevance, cross)) [:2] == [0, 2]
    X, y = _toy(n=200)
    sel = NMIFeatureSelector(n_features=5).fit(X.assign(const=1.0), y)
    assert X.shape[1] not in sel.selected_  # the constant column is never selected
    assert sel.ranking_[-1] == X.shape[1] or list(X.columns).index("noise") in sel.ranking_[-2:]


def test_multi_target_rankings_are_merged_round_robin():
    assert merge_round_robin([[0, 1, 2], [3, 0, 4]]) == [0, 3, 1, 2, 4]
    assert merge_round_robin([[0, 1, 2], [3, 0, 4]], n_max=3) == [0, 3, 1]
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(400, 6)), columns=[f"f{i}" for i in range(6)])
    Y = np.column_stack([np.exp(X["f4"]), X["f1"] ** 3])
    sel = NMIFeatureSelector(n_features=2).fit(X, Y)
    assert sel.selected_names_ == ["f4", "f1"]


def test_selector_uses_precomputed_cross_nmi_and_checks_it():
    X, y = _toy(n=200)
    cross = cross_nmi(X)
    a = NMIFeatureSelector(n_features=3, cross_nmi=cross).fit(X, y)
    b = NMIFeatureSelector(n_features=3).fit(X, y)
    assert list(a.selected_) == list(b.selected_)
    with pytest.raises(ValueError, match="cross_nmi lacks"):
        NMIFeatureSelector(n_features=3, cross_nmi=cross.drop(index="b", columns="b")).fit(X, y)
