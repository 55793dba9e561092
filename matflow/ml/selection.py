"""MODNet-style feature selection by normalised mutual information (NMI) and relevance/redundancy.

NMI(x, y) = MI(x, y) / ((H(x) + H(y)) / 2), with Kraskov k-NN mutual-information estimates (k = 3,
scikit-learn's estimator) and a feature's entropy taken as its self-MI, as in De Breuck et al. (2021).
Features are ranked greedily: the first maximises NMI to the target, each next one maximises

    NMI(f, y) / (max_{s selected} NMI(f, s)^p + c),  p = max(0.1, 4.5 - 0.4 n^0.4),  c = min(1e5, 1e-6 n^3)

with n the number already selected, so early picks avoid redundancy strongly and later ones follow
relevance. Several targets are ranked separately and merged round-robin.

The feature-feature (cross) NMI matrix is the expensive part (F^2/2 pairs); it uses no target, so it is
computed once per dataset and preset on at most ``max_rows`` rows and cached on disk as ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.special import digamma
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import mutual_info_regression
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "N_NEIGHBORS",
    "ksg_mi",
    "prepare_columns",
    "feature_entropies",
    "nmi_to_target",
    "cross_nmi",
    "cached_cross_nmi",
    "rr_schedule",
    "rank_features",
    "merge_round_robin",
    "NMIFeatureSelector",
]

N_NEIGHBORS = 3
"""k of the Kraskov estimator, as in MODNet and scikit-learn's default."""


def prepare_columns(X: np.ndarray, random_state: int | None = 0) -> np.ndarray:
    """Scale each column to unit variance and add 1e-10-level jitter, exactly as scikit-learn does.

    The jitter breaks ties of discrete-valued features, which the k-NN estimator cannot handle.
    """
    X = np.array(X, dtype=float, copy=True)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    X /= std
    rng = np.random.default_rng(random_state)
    scale = np.maximum(1.0, np.mean(np.abs(X), axis=0))
    X += 1e-10 * scale * rng.standard_normal(size=X.shape)
    return X


def _count_within(sorted_v: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Number of entries with |sorted_v - v| <= r, exactly as a KD-tree radius count decides it.

    ``searchsorted`` on v ± r can be off by one where v ± r rounds onto a neighbour; the window ends are
    then moved by comparing the distances themselves.
    """
    n = sorted_v.size
    lo = np.searchsorted(sorted_v, v - r, "left")
    hi = np.searchsorted(sorted_v, v + r, "right") - 1
    for _ in range(2):
        inside_lo = np.abs(sorted_v[np.clip(lo, 0, n - 1)] - v) <= r
        lo = np.where(~inside_lo, lo + 1, lo)
        prev_in = (lo > 0) & (np.abs(sorted_v[np.clip(lo - 1, 0, n - 1)] - v) <= r)
        lo = np.where(prev_in, lo - 1, lo)
        inside_hi = np.abs(sorted_v[np.clip(hi, 0, n - 1)] - v) <= r
        hi = np.where(~inside_hi, hi - 1, hi)
        next_in = (hi < n - 1) & (np.abs(sorted_v[np.clip(hi + 1, 0, n - 1)] - v) <= r)
        hi = np.where(next_in, hi + 1, hi)
    return hi - lo + 1


def ksg_mi(x: np.ndarray, y: np.ndarray, k: int = N_NEIGHBORS,
           sorted_x: np.ndarray | None = None, sorted_y: np.ndarray | None = None) -> float:
    """Kraskov (algorithm 1) MI in nats between two prepared 1-D columns, clipped at 0.

    Same estimator as scikit-learn's ``_compute_mi_cc``: the Chebyshev distance to the k-th joint
    neighbour sets a radius; marginal neighbour counts inside it come from sorted arrays
    (two ``searchsorted`` calls) instead of two KD-trees, which roughly halves the cost per pair.
    """
    n = x.size
    pts = np.column_stack((x, y))
    dist, _ = cKDTree(pts).query(pts, k=k + 1, p=np.inf)
    r = np.nextafter(dist[:, -1], 0)
    sx = np.sort(x) if sorted_x is None else sorted_x
    sy = np.sort(y) if sorted_y is None else sorted_y
    nx = _count_within(sx, x, r) - 1
    ny = _count_within(sy, y, r) - 1
    mi = digamma(n) + digamma(k) - digamma(nx + 1).mean() - digamma(ny + 1).mean()
    return max(0.0, float(mi))


def feature_entropies(X: np.ndarray, random_state: int | None = 0) -> np.ndarray:
    """Entropy of each column as its k-NN self-MI (MODNet's convention), in nats."""
    Xp = prepare_columns(X, random_state)
    Xq = prepare_columns(X, None if random_state is None else random_state + 1)
    return np.array([ksg_mi(Xp[:, j], Xq[:, j]) for j in range(Xp.shape[1])])


def nmi_to_target(X: np.ndarray, y: np.ndarray, entropies: np.ndarray | None = None,
                  random_state: int | None = 0) -> np.ndarray:
    """NMI of every column of ``X`` with one target ``y`` (scikit-learn's k-NN MI, k = 3)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if entropies is None:
        entropies = feature_entropies(X, random_state)
    mi = mutual_info_regression(X, y, n_neighbors=N_NEIGHBORS, random_state=random_state)
    h_y = feature_entropies(y[:, None], random_state)[0]
    denom = (entropies + h_y) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        nmi = np.where(denom > 0, mi / denom, 0.0)
    return np.clip(nmi, 0.0, 1.0)


def _cross_row(i: int, Xp: np.ndarray, sorted_cols: np.ndarray, h: np.ndarray) -> np.ndarray:
    out = np.zeros(Xp.shape[1])
    for j in range(i + 1, Xp.shape[1]):
        mi = ksg_mi(Xp[:, i], Xp[:, j], sorted_x=sorted_cols[:, i], sorted_y=sorted_cols[:, j])
        denom = (h[i] + h[j]) / 2.0
        out[j] = mi / denom if denom > 0 else 0.0
    return out


def cross_nmi(X: np.ndarray | pd.DataFrame, max_rows: int = 6000, random_state: int | None = 0,
              n_jobs: int = 1) -> pd.DataFrame:
    """Symmetric feature-feature NMI matrix (diagonal 1) on at most ``max_rows`` sampled rows.

    Columns are prepared (scaled, jittered) and sorted once; pairs are spread over ``n_jobs``
    processes by rows of the upper triangle. Deterministic for a given ``random_state``.
    """
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    values = frame.to_numpy(dtype=float)
    if np.isnan(values).any():
        raise ValueError("cross_nmi needs NaN-free features; impute them first (FeatureCleaner)")
    rng = np.random.default_rng(random_state)
    if len(values) > max_rows:
        values = values[np.sort(rng.choice(len(values), max_rows, replace=False))]
    Xp = prepare_columns(values, random_state)
    h = feature_entropies(values, random_state)
    sorted_cols = np.sort(Xp, axis=0)
    F = Xp.shape[1]
    if n_jobs == 1:
        rows = [_cross_row(i, Xp, sorted_cols, h) for i in range(F)]
    else:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=n_jobs)(delayed(_cross_row)(i, Xp, sorted_cols, h) for i in range(F))
    M = np.vstack(rows) if rows else np.zeros((0, 0))
    M = np.clip(M + M.T, 0.0, 1.0)
    np.fill_diagonal(M, 1.0)
    return pd.DataFrame(M, index=frame.columns, columns=frame.columns)


def _frame_digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in frame.columns]).encode())
    h.update(np.ascontiguousarray(frame.to_numpy(dtype=float)).tobytes())
    return h.hexdigest()[:16]


def cached_cross_nmi(X: pd.DataFrame, dataset: str, preset: str, cache_dir: str | Path | None = None,
                     max_rows: int = 6000, random_state: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """``cross_nmi`` cached per dataset, preset and exact feature values (an ``.npz`` without pickle)."""
    if cache_dir is None:
        from matflow.settings import get_settings

        cache_dir = get_settings().cache_dir
    key = f"{_frame_digest(X)}-{max_rows}-{random_state}-k{N_NEIGHBORS}"
    path = Path(cache_dir) / "nmi" / f"{dataset}__{preset}__{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            names = [str(c) for c in data["columns"]]
            return pd.DataFrame(data["nmi"], index=names, columns=names)
    result = cross_nmi(X, max_rows=max_rows, random_state=random_state, n_jobs=n_jobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, nmi=result.to_numpy(), columns=np.array([str(c) for c in result.columns]))
    tmp.replace(path)
    return result


def rr_schedule(n_selected: int) -> tuple[float, float]:
    """MODNet's (p, c) for the redundancy penalty after ``n_selected`` picks."""
    n = float(n_selected)
    return max(0.1, 4.5 - 0.4 * n ** 0.4), min(1e5, 1e-6 * n ** 3)


def rank_features(relevance: np.ndarray, cross: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """Greedy relevance/redundancy order (indices) of the candidates, best first."""
    relevance = np.asarray(relevance, dtype=float)
    F = relevance.size
    n_max = F if n_max is None else min(n_max, F)
    if F == 0 or n_max == 0:
        return np.zeros(0, dtype=int)
    order = [int(np.argmax(relevance))]
    available = np.ones(F, dtype=bool)
    available[order[0]] = False
    redundancy = np.asarray(cross[order[0]], dtype=float).copy()
    while len(order) < n_max:
        p, c = rr_schedule(len(order))
        score = relevance / (np.power(np.clip(redundancy, 0.0, None), p) + c)
        score[~available] = -np.inf
        best = int(np.argmax(score))
        order.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, cross[best])
    return np.asarray(order, dtype=int)


def merge_round_robin(rankings: Sequence[Sequence[int]], n_max: int | None = None) -> list[int]:
    """Interleave per-target rankings (first of each, then second of each, ...) without repeats."""
    merged: list[int] = []
    seen: set[int] = set()
    longest = max((len(r) for r in rankings), default=0)
    for pos in range(longest):
        for ranking in rankings:
            if pos < len(ranking) and ranking[pos] not in seen:
                seen.add(int(ranking[pos]))
                merged.append(int(ranking[pos]))
    return merged if n_max is None else merged[:n_max]


class NMIFeatureSelector(TransformerMixin, BaseEstimator):
    """Select ``n_features`` columns by MODNet's NMI relevance/redundancy procedure.

    Expects NaN-free input (impute first). ``y`` may have several columns: each is ranked on its own and
    the rankings are merged round-robin. ``cross_nmi`` may be a precomputed DataFrame (index and columns
    are feature names, e.g. from ``cached_cross_nmi`` on the whole dataset); otherwise it is computed on
    the training rows. Features that are constant, or whose NMI to every target is <= the floor
    (``min_nmi``: a number, or "auto" = the NMI features reach with a permuted target, i.e. no detectable
    information), are not candidates; ``ranking_`` lists them last, by relevance, and they fill the
    selection only when fewer than ``n_features`` features are informative.
    """

    def __init__(self, n_features: int = 64, min_nmi: float | str = "auto", max_rows: int = 6000,
                 cross_nmi: pd.DataFrame | None = None, random_state: int = 0, n_jobs: int = 1):
        self.n_features = n_features
        self.min_nmi = min_nmi
        self.max_rows = max_rows
        self.cross_nmi = cross_nmi
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y):
        names = (np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame)
                 else np.array([f"x{i}" for i in range(np.shape(X)[1])], dtype=object))
        values = np.asarray(X, dtype=float)
        Y = np.asarray(y, dtype=float)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if values.ndim != 2 or len(values) != len(Y):
            raise ValueError("X must be 2-D with as many rows as y")
        if np.isnan(values).any():
            raise ValueError("NMIFeatureSelector needs NaN-free X; impute first")
        self.n_features_in_ = values.shape[1]
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = names
        spread = values.max(axis=0) - values.min(axis=0) if len(values) else np.zeros(values.shape[1])
        varying = np.flatnonzero(spread > 0)
        ent = feature_entropies(values[:, varying], self.random_state) if varying.size else np.zeros(0)
        relevance = np.zeros((Y.shape[1], values.shape[1]))
        for t in range(Y.shape[1]):
            if varying.size and np.ptp(Y[:, t]) > 0:
                relevance[t, varying] = nmi_to_target(values[:, varying], Y[:, t], ent, self.random_state)
        best_rel = relevance.max(axis=0)
        self.nmi_floor_ = self._floor(values[:, varying], Y, ent)
        informative = (relevance[:, varying] > self.nmi_floor_[:, None]).any(axis=0)
        candidates = varying[informative] if informative.any() else varying
        if self.cross_nmi is not None:
            missing = [n for n in names[candidates] if n not in self.cross_nmi.index]
            if missing:
                raise ValueError(f"cross_nmi lacks {len(missing)} feature(s), e.g. {missing[:3]}")
            cross = self.cross_nmi.loc[names[candidates], names[candidates]].to_numpy(dtype=float)
        else:
            sub = pd.DataFrame(values[:, candidates], columns=names[candidates])
            cross = cross_nmi(sub, self.max_rows, self.random_state, self.n_jobs).to_numpy()
        rankings = [candidates[rank_features(relevance[t, candidates], cross)] for t in range(Y.shape[1])]
        ordered = merge_round_robin(rankings)
        rest = [int(i) for i in np.argsort(-best_rel, kind="stable") if int(i) not in set(ordered)]
        self.ranking_ = np.asarray(ordered + rest, dtype=int)
        # if fewer features pass the floor than asked for, the next ones follow by relevance
        self.selected_ = np.asarray(self.ranking_[: max(1, int(self.n_features))], dtype=int)
        self.n_informative_ = len(ordered)
        self.relevance_ = relevance
        self.selected_names_ = [str(n) for n in names[self.selected_]]
        return self

    def _floor(self, values: np.ndarray, Y: np.ndarray, ent: np.ndarray) -> np.ndarray:
        """Per-target NMI below which a feature carries no detectable information.

        ``min_nmi="auto"``: the largest NMI any feature reaches with a randomly permuted target (two
        permutations), i.e. the estimator's own noise level for this sample size.
        """
        if self.min_nmi != "auto":
            return np.full(Y.shape[1], float(self.min_nmi))
        rng = np.random.default_rng(self.random_state)
        floors = np.zeros(Y.shape[1])
        if values.shape[1] == 0:
            return floors
        for t in range(Y.shape[1]):
            if np.ptp(Y[:, t]) == 0:
                continue
            null = [nmi_to_target(values, rng.permutation(Y[:, t]), ent, self.random_state).max()
                    for _ in range(2)]
            floors[t] = max(null)
        return floors

    def transform(self, X):
        check_is_fitted(self, "selected_")
        values = np.asarray(X, dtype=float)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got {values.shape[1]}")
        return values[:, self.selected_]

    def get_support(self) -> np.ndarray:
        check_is_fitted(self, "selected_")
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.selected_] = True
        return mask
