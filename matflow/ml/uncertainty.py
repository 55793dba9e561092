"""Calibrated uncertainty: conformal intervals around a network ensemble, and an applicability flag.

Split conformal (``ConformalCalibrator``): on calibration rows the ensemble never trained on, the score
is the residual normalised by the ensemble spread, s = |y - mean| / (std + eps). Its finite-sample
quantile q at level ceil((n + 1) * coverage) / n makes ``mean ± q * (std + eps)`` cover a new
exchangeable point with probability >= coverage (Vovk et al.; Lei et al. 2018). eps (a fraction of the
typical spread) keeps intervals finite where all members agree. Only the held-out rows calibrate, so on
a dataset of ~1,000 rows the interval's coverage itself scatters by ~3 points from fit to fit.

Cross-conformal (``CrossConformal``): the training rows are dealt into K folds and each ensemble member
skips one fold, so every training row has an out-of-fold prediction (the mean F_f of the members that
skipped its fold f) and every row calibrates. That removes the ~3-point scatter of a 10 % calibration
split. The score is the out-of-fold residual divided by a local difficulty sigma(x): the mean out-of-fold
residual of the k nearest *other* training rows in the scaled selected-feature space (Papadopoulos et al.
2011). The ensemble spread cannot normalise here: at a training row most members have fitted it, so the
spread there is smaller than at a new point and the scores come out optimistic.

The scores calibrate the error of one fold's members F_f, but a prediction is the mean of all folds,
which is more accurate: for any x and y, the mean over folds of (y - F_f(x))^2 equals
(y - mean_f F_f(x))^2 + var_f F_f(x). Centred on the full mean, ``mean ± q * sigma(x)`` therefore
over-covers (by about 3 points on matbench_phonons; CV+ of Barber et al. 2021, which centres each
score on its own fold's prediction, by 5-6). The half-width is scaled by
c = sqrt(1 - mean(var_f F_f / sigma^2) / mean(score^2)), the identity's second moments in units of
sigma, with var_f F_f taken at the training rows. There the members have fitted the row, so the spread
understates the one at new inputs and c errs towards 1: the correction is partial and the intervals
stay on the conservative side. This step assumes the normalised errors share a shape up to scale, so
coverage is measured on held-out folds (benchmarks/modnet.py) rather than guaranteed. Finally, for an
input outside the applicability domain the half-width is never below z times the members' spread at x
(z the Gaussian quantile of the coverage): sigma(x) comes from the nearest training rows and knows
nothing of an input unlike all of them, where the members disagree. Inside the domain the calibrated
interval stands as it is (there a floor on every row raised Alexandria's coverage by up to 0.5 points).

Applicability: mean Euclidean distance to the k nearest training rows in the scaled selected-feature
space; a point is "in domain" when that distance is within the ``quantile`` of the training rows' own
(leave-one-out) distances.

Widening with distance (``DistanceWidening``): sigma(x) and q are learned from rows whose neighbours
were in training, so they say nothing about how much worse the model does far from its data. The
estimator therefore also predicts each training row from a network that skipped a whole group of rows
(a k-means cluster of the features, or a chemical family) and records, for these out-of-group rows and
for the ordinary out-of-fold rows, the AD distance d to the rows that trained the predicting model and
the score r = |residual| / (q sigma). A factor w(d) is a monotone step function of d: rows are binned
by d (equal counts), each bin's conformal quantile of r is taken, adjacent bins that violate
monotonicity are pooled (pool-adjacent-violators with the pooled bin's quantile as its value, i.e.
isotonic quantile regression), optionally floored at 1.

Two stages (``DistanceWidening.fit_two_stage``, the default): the kNN difficulty sigma(x) under-states
how errors grow with distance even among rows like the training data (the unwidened ``before`` rows of
``benchmarks/results/ood_coverage_inner*.json`` measure it: in domain about 0.92, out of domain 0.53-0.63),
so first w_near(d) is fitted on the out-of-fold rows only, without a floor: it may fall below 1 near
the data, and on rows exchangeable with those it brings every distance to nominal. A new point's d is
then its mean distance to the training rows of each cross-fitting fold, the reference set an
out-of-fold row was measured against (its distance to all training rows would be smaller). Then the scores of
all rows (out-of-fold and out-of-group) are divided by w_near(d) and w_far(d) >= 1 is fitted on them:
the extra width that rows of unseen groups need at the same distance. The interval at a new point is
``mean ± w_near(d) w_far(d) c q sigma(x)``. (The single pooled stage with w >= 1, ``fit``, over-covers
random splits: near the data it cannot narrow an interval that sigma made too wide.) Beyond the
largest calibration distance w is undefined: no interval is given there (NaN bounds) rather than an
extrapolated one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import norm

__all__ = ["conformal_quantile", "ConformalCalibrator", "CrossConformal", "ApplicabilityDomain",
           "DistanceWidening", "empirical_coverage", "knn_difficulty", "NO_INTERVAL_NOTE"]

NO_INTERVAL_NOTE = "no calibrated interval: farther from the training data than any calibration row"


def conformal_quantile(scores: np.ndarray, coverage: float, weights: np.ndarray | None = None) -> float:
    """The ceil((n + 1) * coverage)-th smallest score (inf when n is too small for that coverage).

    With ``weights`` (one per score, >= 0): the smallest score whose cumulative weight reaches
    ``coverage`` of the total plus one mean weight for the new point, the weighted form of the same
    rule (equal weights give the unweighted quantile). Down-weighting the members of a large family of
    near-identical rows keeps one family from setting the quantile on its own.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    scores = np.asarray(scores, dtype=float).ravel()
    if weights is None:
        scores = np.sort(scores)
        n = scores.size
        rank = math.ceil((n + 1) * coverage)
        if n == 0 or rank > n:
            return math.inf
        return float(scores[rank - 1])
    weights = np.asarray(weights, dtype=float).ravel()
    if weights.shape != scores.shape or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights need one finite, non-negative value per score")
    if scores.size == 0 or weights.sum() <= 0:
        return math.inf
    order = np.argsort(scores, kind="stable")
    cumulative = np.cumsum(weights[order]) / (weights.sum() + weights.mean())
    k = int(np.searchsorted(cumulative, coverage * (1.0 - 1e-12), side="left"))
    return math.inf if k >= scores.size else float(scores[order][k])


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


def knn_difficulty(tree: cKDTree, residuals: np.ndarray, X: np.ndarray, k: int,
                   exclude: np.ndarray | None = None) -> np.ndarray:
    """Mean residual (rows, outputs) of the k nearest reference rows of each row of ``X``.

    ``exclude[j]`` is a reference index to leave out for row j (the row itself when X are reference
    rows), so a calibration row's own residual never enters its normaliser.
    """
    residuals = np.atleast_2d(np.asarray(residuals, dtype=float).T).T
    n = len(residuals)
    k = max(1, min(int(k), n - (exclude is not None)))
    extra = 1 if exclude is not None else 0
    _, idx = tree.query(np.asarray(X, dtype=float), k=k + extra)
    idx = np.atleast_2d(np.asarray(idx).T).T if k + extra > 1 else np.asarray(idx).reshape(-1, 1)
    if exclude is not None:
        keep = idx != np.asarray(exclude)[:, None]
        # drop the excluded index where it was found, else the farthest neighbour: k remain per row
        last = np.zeros_like(keep)
        last[:, -1] = True
        keep &= ~(last & keep.all(axis=1, keepdims=True))
        idx = idx[keep].reshape(len(idx), k)
    return residuals[idx].mean(axis=1)


class CrossConformal:
    """Out-of-fold conformal intervals with a k-nearest-neighbour difficulty normaliser (see module docstring).

    Fitted state (arrays in the learned target space): ``residuals_`` (n, outputs) out-of-fold absolute
    residuals of the training rows, which sigma(x) averages; ``quantile_``, ``eps_`` and ``shrink_``
    (outputs,), the last the ensemble-averaging factor c (1 when no fold predictions are given).
    """

    def __init__(self, coverage: float = 0.9, n_neighbors: int = 100, eps_fraction: float = 0.05,
                 min_shrink: float = 0.5):
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.coverage = coverage
        self.n_neighbors = n_neighbors
        self.eps_fraction = eps_fraction
        self.min_shrink = min_shrink

    def fit(self, tree: cKDTree, X: np.ndarray, y: np.ndarray, oof: np.ndarray,
            fold_means: np.ndarray | None = None) -> CrossConformal:
        """``oof``: each training row's prediction by the members that did not see it;
        ``fold_means`` (folds, rows, outputs): each fold's members' mean prediction at the training rows."""
        y, oof = (np.atleast_2d(np.asarray(a, dtype=float).T).T for a in (y, oof))
        self.residuals_ = np.abs(y - oof)
        sigma = knn_difficulty(tree, self.residuals_, X, self.n_neighbors, exclude=np.arange(len(y)))
        self.eps_ = self.eps_fraction * np.maximum(np.median(sigma, axis=0), 1e-12)
        scores = self.residuals_ / (sigma + self.eps_)
        self.quantile_ = np.array([conformal_quantile(scores[:, j], self.coverage) for j in range(y.shape[1])])
        self.shrink_ = np.ones(y.shape[1])
        if fold_means is not None and len(fold_means) > 1:
            spread = np.var(np.asarray(fold_means, dtype=float), axis=0) / (sigma + self.eps_) ** 2
            ratio = spread.mean(axis=0) / np.maximum((scores**2).mean(axis=0), 1e-300)
            self.shrink_ = np.sqrt(np.clip(1.0 - ratio, self.min_shrink**2, 1.0))
        self.n_calibration_ = len(y)
        return self

    def sigma(self, tree: cKDTree, X: np.ndarray) -> np.ndarray:
        """Local difficulty (rows, outputs) of new rows, eps included."""
        return knn_difficulty(tree, self.residuals_, X, self.n_neighbors) + self.eps_

    def interval(self, tree: cKDTree, X: np.ndarray, mean: np.ndarray,
                 spread: np.ndarray | None = None,
                 scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``mean ± half``; ``spread`` (rows, outputs), the members' std at X, floors the half-width
        (pass zeros for rows that need no floor); ``scale`` (rows, outputs), a widening factor w(d)
        applied before the floor, where NaN means "no interval" and gives NaN bounds."""
        half = self.shrink_ * self.quantile_ * self.sigma(tree, X)
        if scale is not None:
            half = half * np.asarray(scale, dtype=float)
        if spread is not None:
            half = np.maximum(half, float(norm.ppf(0.5 + self.coverage / 2.0)) * np.asarray(spread, dtype=float))
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

    @property
    def tree(self) -> cKDTree:
        """k-d tree over the reference rows (built on first use after loading)."""
        if not hasattr(self, "_tree"):
            self._tree = cKDTree(self.X_)
        return self._tree

    def distance(self, X: np.ndarray) -> np.ndarray:
        k = max(1, min(self.n_neighbors, len(self.X_)))
        d, _ = self.tree.query(np.asarray(X, dtype=float), k=k)
        return np.atleast_2d(d.T).T.mean(axis=1) if k > 1 else np.ravel(d)

    def in_domain(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = self.distance(X)
        return dist <= self.threshold_, dist


class DistanceWidening:
    """Monotone widening factor w(d) >= 1 of the interval half-width with AD distance d (module docstring).

    Fitted state: ``edges_`` (bins,), the upper distance of each bin (the last is the largest calibration
    distance, beyond which ``factor`` is NaN), and ``factor_`` (bins, outputs).
    """

    def __init__(self, coverage: float = 0.9, min_bin: int = 50, max_bins: int = 20, floor: float | None = 1.0):
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.coverage = coverage
        self.min_bin = min_bin
        self.max_bins = max_bins
        self.floor = floor  # None lets w fall below 1 where the calibration rows say the interval is wide

    def fit(self, distance: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> DistanceWidening:
        """``distance`` (rows,): each calibration row's AD distance to the rows that trained its predictor;
        ``scores`` (rows, outputs): its absolute residual over the unwidened half-width; ``weights``
        (rows,), optional: each row's weight in the bins' quantiles (``conformal_quantile``)."""
        distance = np.asarray(distance, dtype=float).ravel()
        scores = np.atleast_2d(np.asarray(scores, dtype=float).T).T
        if len(distance) != len(scores) or not len(distance):
            raise ValueError("distance and scores need the same, non-zero number of rows")
        if weights is not None:
            weights = np.asarray(weights, dtype=float).ravel()
            if len(weights) != len(distance):
                raise ValueError(f"weights has {len(weights)} values for {len(distance)} calibration rows")
        order = np.argsort(distance, kind="stable")
        n_bins = int(max(1, min(self.max_bins, len(distance) // max(1, int(self.min_bin)))))
        chunks = np.array_split(order, n_bins)
        self.edges_ = np.array([distance[c].max() for c in chunks])
        chunk_weights = [None if weights is None else weights[c] for c in chunks]
        self.factor_ = np.stack([self._isotonic_quantile([scores[c, j] for c in chunks], chunk_weights)
                                 for j in range(scores.shape[1])], axis=1)
        self.n_calibration_ = len(distance)
        return self

    def _isotonic_quantile(self, bins: list[np.ndarray], weights: list[np.ndarray | None]) -> np.ndarray:
        """Per-bin value: nondecreasing, each run of pooled bins at its pooled conformal quantile, >= floor."""
        def pooled_weights(run_a, run_b):
            return None if run_a is None else np.concatenate([run_a, run_b])

        runs: list[list] = []  # [number of bins, pooled scores, pooled weights, quantile]
        for b, w in zip(bins, weights, strict=True):
            runs.append([1, b, w, conformal_quantile(b, self.coverage, w)])
            while len(runs) > 1 and runs[-2][3] > runs[-1][3]:
                size, pooled, pooled_w, _ = runs.pop()
                runs[-1][0] += size
                runs[-1][1] = np.concatenate([runs[-1][1], pooled])
                runs[-1][2] = pooled_weights(runs[-1][2], pooled_w)
                runs[-1][3] = conformal_quantile(runs[-1][1], self.coverage, runs[-1][2])
        values = np.concatenate([np.full(size, q) for size, _, _, q in runs])
        return values if self.floor is None else np.maximum(values, self.floor)

    def fit_two_stage(self, near_distance: np.ndarray, near_scores: np.ndarray,
                      distance: np.ndarray, scores: np.ndarray, near_weights: np.ndarray | None = None,
                      weights: np.ndarray | None = None) -> DistanceWidening:
        """w = w_near(d) * w_far(d): ``near_*`` (out-of-fold rows) give w_near without a floor; all rows'
        scores divided by w_near give w_far (floored at ``floor``). Stored as one step function on the
        union of both stages' bin edges, so prediction and saving are those of ``fit``. ``near_weights``
        and ``weights``: optional per-row weights of the two stages' quantiles."""
        near = DistanceWidening(self.coverage, self.min_bin, self.max_bins, floor=None).fit(
            near_distance, near_scores, near_weights)
        distance = np.asarray(distance, dtype=float).ravel()
        scores = np.atleast_2d(np.asarray(scores, dtype=float).T).T
        far = DistanceWidening(self.coverage, self.min_bin, self.max_bins, self.floor).fit(
            distance, scores / near.factor(distance, extend=True), weights)
        self.edges_ = np.unique(np.concatenate([near.edges_, far.edges_]))
        self.edges_ = self.edges_[self.edges_ <= far.max_distance]
        self.factor_ = near.factor(self.edges_, extend=True) * far.factor(self.edges_)
        self.n_calibration_ = len(distance)
        return self

    @property
    def max_distance(self) -> float:
        return float(self.edges_[-1])

    def factor(self, distance: np.ndarray, extend: bool = False) -> np.ndarray:
        """w (rows, outputs) at the given distances; NaN beyond the largest calibration distance
        (``extend``: the last bin's value there instead)."""
        distance = np.asarray(distance, dtype=float).ravel()
        idx = np.searchsorted(self.edges_, distance, side="left")
        if extend:
            idx = np.minimum(idx, len(self.edges_) - 1)
        out = np.full((distance.size, self.factor_.shape[1]), np.nan)
        inside = idx < len(self.edges_)
        out[inside] = self.factor_[idx[inside]]
        return out
