"""Calibrated uncertainty: split-conformal intervals around a bootstrap ensemble, and an applicability flag.

Conformal step: on calibration rows the ensemble never trained on, the score is the residual normalised
by the ensemble spread, s = |y - mean| / (std + eps). Its finite-sample quantile q at level
ceil((n + 1) * coverage) / n makes ``mean ± q * (std + eps)`` cover a new exchangeable point with
probability >= coverage (Vovk et al.; Lei et al. 2018). eps (a fraction of the typical spread) keeps
intervals finite where all members agree.

Applicability: mean Euclidean distance to the k nearest training rows in the scaled selected-feature
space; a point is "in domain" when that distance is within the ``quantile`` of the training rows' own
(leave-one-out) distances.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["conformal_quantile", "ConformalCalibrator", "ApplicabilityDomain", "empirical_coverage"]


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest score (inf when n is too small for that coverage)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    scores = np.sort(np.asarray(scores, dtype=float).ravel())
    n = scores.size
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return math.inf
    return float(scores[rank - 1])


def empirical_coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of values inside their interval (all sub-targets pooled)."""
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= lower) & (y <= upper)))


class ConformalCalibrator:
    """Per-sub-target normalised split-conformal quantiles (arrays of shape (n_outputs,))."""

    def __init__(self, coverage: float = 0.9, eps_fraction: float = 0.05):
        self.coverage = coverage
        self.eps_fraction = eps_fraction

    def fit(self, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> ConformalCalibrator:
        y, mean, std = (np.atleast_2d(np.asarray(a, dtype=float).T).T for a in (y, mean, std))
        self.eps_ = self.eps_fraction * np.maximum(np.median(std, axis=0), 1e-12)
        scores = np.abs(y - mean) / (std + self.eps_)
        self.quantile_ = np.array([conformal_quantile(scores[:, j], self.coverage) for j in range(y.shape[1])])
        self.n_calibration_ = len(y)
        return self

    def interval(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = self.quantile_ * (np.asarray(std, dtype=float) + self.eps_)
        return mean - half, mean + half


class ApplicabilityDomain:
    """Distance-to-training flag in the model's scaled selected-feature space."""

    def __init__(self, n_neighbors: int = 5, quantile: float = 0.95):
        self.n_neighbors = n_neighbors
        self.quantile = quantile

    def fit(self, X: np.ndarray) -> ApplicabilityDomain:
        # float32-representable, so the registry stores the reference set in half the space losslessly
        self.X_ = np.asarray(X, dtype=np.float32).astype(np.float64)
        k = min(self.n_neighbors, len(self.X_) - 1)
        if k < 1:
            self.threshold_ = math.inf
            return self
        self._tree = cKDTree(self.X_)
        d, _ = self._tree.query(self.X_, k=k + 1)  # first neighbour is the point itself
        train_dist = d[:, 1:].mean(axis=1)
        self.threshold_ = float(np.quantile(train_dist, self.quantile))
        return self

    def distance(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "_tree"):
            self._tree = cKDTree(self.X_)
        k = max(1, min(self.n_neighbors, len(self.X_)))
        d, _ = self._tree.query(np.asarray(X, dtype=float), k=k)
        return np.atleast_2d(d.T).T.mean(axis=1) if k > 1 else np.ravel(d)

    def in_domain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = self.distance(X)
        return dist <= self.threshold_, dist
