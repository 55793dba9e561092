"""``MODNetRegressor``: NMI selection + joint-learning torch network + ensemble/conformal uncertainty.

A scikit-learn regressor on a feature matrix (NaN and inf allowed: ``matflow.featurize.FeatureCleaner``,
fitted on the training rows, drops all-NaN and constant columns and fills the rest with training
medians, the same policy as the feature tables). ``y`` may be
1-D (one property), or 2-D: by default all columns are sub-targets of one property (a temperature
function learned as one multi-output head); ``targets`` splits the columns into several properties
and target groups for joint learning, with ``loss_weights`` per property.

Fit: clean -> select ``n_features`` by NMI relevance/redundancy -> min-max scale features, standardise
targets -> train ``n_estimators`` networks and calibrate their intervals, in one of two ways:

- ``calibration="cross"`` (default): the rows are dealt into ``cv_folds`` folds (default: one per member);
  member m trains on every fold but m % cv_folds (early-stopped on ``val_fraction`` of those rows); the
  members that skipped a fold predict it, so every row calibrates (see ``uncertainty``);
- ``calibration="split"``: ``calib_fraction`` rows are held out of every member; members train on
  bootstrap resamples of the rest, early-stopped on their out-of-bag rows; the held-out rows calibrate.

With cross calibration and ``widening=True`` (default) the half-width also follows the distance to the
training data: the training rows are split into ``widening_groups`` groups (k-means clusters of the
scaled selected features, or the ``groups`` given to ``fit``, e.g. chemical systems), one extra network
per group is trained without it, and a monotone factor of the distance is calibrated on the ordinary
out-of-fold residuals (w_near, may narrow near the data) and then on these out-of-group ones (w_far >= 1;
``uncertainty.DistanceWidening.fit_two_stage``; ``widening_form="pooled"`` is the one-stage w >= 1 of
models fitted before).
The extra networks are discarded after calibration; they cost ``widening_groups`` more trainings. Farther
from the training data than any calibration row, no interval is given: NaN bounds, ``interval_ok`` False.
Predictions are computed in float64 so a row's value does not depend on the batch it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cluster import KMeans
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted, validate_data

from matflow.featurize.runner import FeatureCleaner
from matflow.ml.network import JointNet, TargetSpec, load_member, members_to_tensors, train_network
from matflow.ml.selection import NMIFeatureSelector
from matflow.ml.uncertainty import (
    NO_INTERVAL_NOTE,
    ApplicabilityDomain,
    ConformalCalibrator,
    CrossConformal,
    DistanceWidening,
    knn_difficulty,
)

__all__ = ["MODNetRegressor", "Prediction"]

_GAUSS_Z = {0.5: 0.674, 0.8: 1.282, 0.9: 1.645, 0.95: 1.960, 0.99: 2.576}


@dataclass
class Prediction:
    """Per-structure predictions: arrays of shape (n,) for one output, (n, m) for m outputs.

    ``interval_ok`` (n,): False where the input is farther from the training data than any row the
    distance widening was calibrated on; there ``lower``/``upper`` are NaN (see ``interval_note``).
    """

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    in_domain: np.ndarray
    distance: np.ndarray
    coverage: float
    calibrated: bool
    interval_ok: np.ndarray | bool = True

    @property
    def interval_note(self) -> np.ndarray:
        """Per row: "" or why no interval is given."""
        ok = np.broadcast_to(np.asarray(self.interval_ok, dtype=bool), np.shape(self.distance))
        return np.where(ok, "", NO_INTERVAL_NOTE)


class MODNetRegressor(RegressorMixin, BaseEstimator):
    """MODNet-style regressor with calibrated intervals (see module docstring).

    Parameters (all plain values, so ``clone``/``get_params`` work):
      n_features: features kept by NMI selection (None: every informative column, no MI computed).
      widths: neurons per layer of the shared, group and property blocks.
      targets: tuple of (name, n_outputs, group) per property, in ``y``'s column order; None = one property.
      loss_weights: weight of each property in the joint loss (None: all 1).
      n_estimators: ensemble members (1: a single network early-stopped on ``val_fraction``, split calibration).
      coverage: nominal coverage of the intervals.
      calibration: "cross" (every row calibrates, out of fold; ``cv_folds`` folds, None = one per member)
      or "split" (``calib_fraction`` rows held out); calib_neighbors: rows in the cross-conformal
      difficulty normaliser. With fewer than
      ``min_calibration`` calibration rows, intervals fall back to ensemble std times the Gaussian
      quantile and ``calibrated`` is False.
      cross_nmi: optional precomputed feature-feature NMI DataFrame (by feature name).
      widening: calibrate how the cross-conformal half-width widens with distance to the training data
      (module docstring); False gives the intervals of earlier versions. widening_groups: number of
      grouped splits it is calibrated on (k-means clusters, or ``fit``'s ``groups`` dealt into this many).
      widening_form: "two_stage" (default: distance dependence from out-of-fold rows, then the extra
      width of out-of-group rows, ``DistanceWidening.fit_two_stage``) or "pooled" (one stage over both,
      w >= 1; models fitted before the two-stage form load as "pooled").
    """

    def __init__(self, n_features: int | None = 64,
                 widths: tuple = ((256,), (128,), (16,)), activation: str = "elu", dropout: float = 0.0,
                 lr: float = 1e-3, batch_size: int = 64, epochs: int = 400, patience: int = 40,
                 weight_decay: float = 0.0, loss: str = "mse", targets: tuple | None = None, loss_weights: tuple | None = None,
                 n_estimators: int = 5, val_fraction: float = 0.1, coverage: float = 0.9,
                 calibration: str = "cross", cv_folds: int | None = None, calib_fraction: float = 0.15,
                 calib_neighbors: int = 100,
                 min_calibration: int = 20, cross_nmi: pd.DataFrame | None = None,
                 min_nmi: float | str = "auto", ad_neighbors: int = 5, ad_quantile: float = 0.95,
                 target_transform: str = "none", random_state: int = 0, n_threads: int | None = None,
                 widening: bool = True, widening_groups: int = 5, widening_form: str = "two_stage"):
        self.n_features = n_features
        self.widths = widths
        self.activation = activation
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.loss = loss
        self.targets = targets
        self.loss_weights = loss_weights
        self.n_estimators = n_estimators
        self.val_fraction = val_fraction
        self.coverage = coverage
        self.calibration = calibration
        self.cv_folds = cv_folds
        self.calib_fraction = calib_fraction
        self.calib_neighbors = calib_neighbors
        self.min_calibration = min_calibration
        self.cross_nmi = cross_nmi
        self.min_nmi = min_nmi
        self.ad_neighbors = ad_neighbors
        self.ad_quantile = ad_quantile
        self.target_transform = target_transform
        self.random_state = random_state
        self.n_threads = n_threads
        self.widening = widening
        self.widening_groups = widening_groups
        self.widening_form = widening_form

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.regressor_tags.poor_score = True  # tiny neural nets on check data: no score promise
        return tags

    # ------------------------------------------------------------------ fit
    def _target_specs(self, n_cols: int) -> list[TargetSpec]:
        if self.targets is None:
            return [TargetSpec("y", n_cols, 0)]
        specs = [TargetSpec(str(t[0]), int(t[1]), int(t[2]) if len(t) > 2 else 0) for t in self.targets]
        if sum(s.n_outputs for s in specs) != n_cols:
            raise ValueError(f"targets describe {sum(s.n_outputs for s in specs)} columns, y has {n_cols}")
        return specs

    def fit(self, X, y, groups=None):
        """Fit on features ``X`` and targets ``y``; ``groups`` (optional, one label per row, e.g. the
        chemical system) define the grouped splits the distance widening is calibrated on."""
        names = (np.asarray(X.columns, dtype=object).astype(str) if isinstance(X, pd.DataFrame) else None)
        X, y = validate_data(self, X, y, ensure_all_finite=False, multi_output=True, y_numeric=True,
                             dtype=np.float64)
        if len(X) < 2:
            raise ValueError(f"MODNetRegressor needs at least 2 samples (got {len(X)} sample)")
        if groups is not None:
            groups = np.asarray(groups)
            if len(groups) != len(X):
                raise ValueError(f"groups has {len(groups)} labels for {len(X)} rows")
        Y = np.asarray(y, dtype=np.float64)
        self._y_ndim = Y.ndim
        Y = Y[:, None] if Y.ndim == 1 else Y
        if not np.isfinite(Y).all():
            raise ValueError("y holds NaN or inf")
        if self.calibration not in ("cross", "split"):
            raise ValueError(f"calibration must be 'cross' or 'split', got {self.calibration!r}")
        if self.widening_form not in ("two_stage", "pooled"):
            raise ValueError(f"widening_form must be 'two_stage' or 'pooled', got {self.widening_form!r}")
        if self.target_transform not in ("none", "log"):
            raise ValueError(f"target_transform must be 'none' or 'log', got {self.target_transform!r}")
        if self.target_transform == "log" and (Y <= 0).any():
            raise ValueError("target_transform='log' needs strictly positive targets")
        self.target_specs_ = self._target_specs(Y.shape[1])
        if self.loss_weights is not None and len(self.loss_weights) != len(self.target_specs_):
            raise ValueError("loss_weights needs one weight per property in targets")
        all_names = names if names is not None else np.array([f"x{i}" for i in range(X.shape[1])], dtype=object)
        threads = torch.get_num_threads()
        if self.n_threads:
            torch.set_num_threads(int(self.n_threads))
        try:
            self._fit(X, Y, all_names, groups)
        finally:
            torch.set_num_threads(threads)
        return self

    def _fit(self, X: np.ndarray, Y: np.ndarray, all_names: np.ndarray, groups: np.ndarray | None) -> None:
        rng = np.random.default_rng(self.random_state)
        cleaner = FeatureCleaner().fit(X)
        varying = np.flatnonzero(cleaner.keep_)
        if varying.size == 0:  # nothing varies: keep one column (0 where it has no value at all)
            varying = np.arange(min(1, X.shape[1]))
        kept = FeatureCleaner.from_medians(np.nan_to_num(cleaner.medians_[varying]), all_names[varying])
        Xv = kept.transform(X[:, varying])
        if self.n_features is None or self.n_features >= varying.size:
            chosen = np.arange(varying.size)
            self.relevance_ = None
        else:
            relevance_cols = self._relevance_columns(Y)
            selector = NMIFeatureSelector(n_features=self.n_features, min_nmi=self.min_nmi,
                                          cross_nmi=self.cross_nmi, random_state=self.random_state)
            selector.fit(pd.DataFrame(Xv, columns=all_names[varying]), Y[:, relevance_cols])
            chosen = np.asarray(selector.selected_, dtype=int)
            self.relevance_ = selector.relevance_.max(axis=0)[selector.selected_]
        self.selected_idx_ = np.asarray(varying[chosen], dtype=int)
        self.selected_names_ = [str(n) for n in all_names[self.selected_idx_]]
        self.cleaner_ = kept.restrict(chosen)  # cleans X[:, selected_idx_] at prediction time
        Xs = Xv[:, chosen]
        self.x_min_ = Xs.min(axis=0)
        span = Xs.max(axis=0) - self.x_min_
        self.x_scale_ = np.where(span > 0, span, 1.0)
        Yt = self._forward(Y)
        self.y_mean_ = Yt.mean(axis=0)
        sd = Yt.std(axis=0)
        self.y_std_ = np.where(sd > 0, sd, 1.0)
        Xn = self._scale(Xs)
        Yn = (Yt - self.y_mean_) / self.y_std_

        self.domain_ = ApplicabilityDomain(self.ad_neighbors, self.ad_quantile).fit(Xn)
        # the method in effect: one member cannot be cross-fitted
        self.calibration_ = "cross" if self.calibration == "cross" and int(self.n_estimators) >= 2 else "split"
        self.widening_ = None
        if self.calibration_ == "cross":
            self._fit_cross(Xn, Yn, Yt, rng)
            if self.widening and self.calibrated_:
                self._fit_widening(Xn, Yn, Yt, groups)
        else:
            self._fit_split(Xn, Yn, Yt, rng)

    def _train_net(self, Xn: np.ndarray, Yn: np.ndarray, train: np.ndarray, val: np.ndarray,
                   seed: int) -> tuple[JointNet, dict]:
        net = JointNet(Xn.shape[1], self.target_specs_, self.widths, self.activation, self.dropout, seed=seed)
        info = train_network(net, Xn[train], Yn[train], X_val=Xn[val], Y_val=Yn[val],
                             loss_weights=self.loss_weights, lr=self.lr, batch_size=self.batch_size,
                             epochs=self.epochs, patience=self.patience,
                             weight_decay=self.weight_decay, loss=self.loss, seed=seed)
        return net.double().eval(), {"best_epoch": info.best_epoch, "n_epochs": info.n_epochs}

    def _train_member(self, Xn: np.ndarray, Yn: np.ndarray, train: np.ndarray, val: np.ndarray,
                      seed: int) -> None:
        net, info = self._train_net(Xn, Yn, train, val, seed)
        self.nets_.append(net)
        self.train_info_.append(info)

    def _widening_split(self, Xn: np.ndarray, groups: np.ndarray | None) -> np.ndarray | None:
        """Grouped split of the training rows (split index per row), or None when it cannot be made."""
        n_splits = int(self.widening_groups)
        if groups is not None:
            labels = np.unique(groups.astype(str), return_inverse=True)[1]
        else:  # twice as many clusters as splits, dealt by GroupKFold so the splits have similar sizes
            n_clusters = max(1, min(2 * n_splits, len(np.unique(Xn, axis=0))))
            labels = KMeans(n_clusters, n_init=4, random_state=int(self.random_state)).fit_predict(Xn)
        n_splits = min(n_splits, len(np.unique(labels)))
        if n_splits < 2:
            return None
        split = np.empty(len(Xn), dtype=int)
        for s, (_, held) in enumerate(GroupKFold(n_splits).split(Xn, groups=labels)):
            split[held] = s
        return split

    def _fit_widening(self, Xn: np.ndarray, Yn: np.ndarray, Yt: np.ndarray, groups: np.ndarray | None) -> None:
        """Calibrate w(d) on out-of-fold rows (near the data) and out-of-group rows (farther away)."""
        split = self._widening_split(Xn, groups)
        if split is None:
            return
        cal, Xd, n = self.calibrator_, self.domain_.X_, len(Xn)
        # scores in units of the unwidened q sigma: out-of-fold rows give a 90 % quantile of ~1 by construction
        sigma = knn_difficulty(self.domain_.tree, cal.residuals_, Xd, cal.n_neighbors,
                               exclude=np.arange(n)) + cal.eps_
        score_fold = cal.residuals_ / (cal.quantile_ * sigma)
        dist_fold, dist_group = np.empty(n), np.empty(n)
        score_group = np.empty_like(score_fold)
        for f in np.unique(self.cv_fold_):
            held = self.cv_fold_ == f
            dist_fold[held] = _mean_knn_distance(Xd[~held], Xd[held], self.ad_neighbors)
        for s in np.unique(split):
            held, rest = split == s, np.flatnonzero(split != s)
            seed = int(self.random_state) * 1000 + 500 + int(s)
            rest = np.random.default_rng(seed).permutation(rest)
            n_val = int(round(self.val_fraction * rest.size)) if rest.size >= 10 else 0
            net, _ = self._train_net(Xn, Yn, np.sort(rest[n_val:]), np.sort(rest[:n_val]), seed)
            residual = np.abs(Yt[held] - self._member_predict(net, Xn[held]))
            tree = cKDTree(Xd[rest])
            # sigma as a new input would get it: from the residuals of the rows outside the group only
            sigma_held = knn_difficulty(tree, cal.residuals_[rest], Xd[held], cal.n_neighbors) + cal.eps_
            score_group[held] = residual / (cal.quantile_ * sigma_held)
            dist_group[held] = _mean_knn_distance(Xd[rest], Xd[held], self.ad_neighbors, tree)
        self.widening_split_ = split
        # kept in memory (not saved) so that benchmarks can compare forms of w(d) on the same networks
        self.widening_calibration_ = (np.concatenate([dist_fold, dist_group]),
                                      np.concatenate([score_fold, score_group]))
        if self.widening_form == "two_stage":
            self.widening_ = DistanceWidening(self.coverage).fit_two_stage(dist_fold, score_fold,
                                                                           *self.widening_calibration_)
        else:
            self.widening_ = DistanceWidening(self.coverage).fit(*self.widening_calibration_)

    def _fit_cross(self, Xn: np.ndarray, Yn: np.ndarray, Yt: np.ndarray, rng: np.random.Generator) -> None:
        n, n_members = len(Xn), int(self.n_estimators)
        n_folds = self.cv_n_folds_ = max(2, min(int(self.cv_folds or n_members), n_members, n))
        fold_of = np.empty(n, dtype=int)
        fold_of[rng.permutation(n)] = np.arange(n) % n_folds  # balanced folds
        self.cv_fold_ = fold_of
        self.nets_, self.train_info_ = [], []
        for m in range(n_members):
            seed = int(self.random_state) * 1000 + m
            rest = np.random.default_rng(seed).permutation(np.flatnonzero(fold_of != m % n_folds))
            n_val = int(round(self.val_fraction * rest.size)) if rest.size >= 10 else 0
            self._train_member(Xn, Yn, np.sort(rest[n_val:]), np.sort(rest[:n_val]), seed)
        self.calibrated_ = n >= self.min_calibration
        if self.calibrated_:
            preds = self._members(Xn)
            member_fold = np.arange(n_members) % n_folds
            fold_means = np.stack([preds[member_fold == f].mean(axis=0) for f in range(n_folds)])
            oof = fold_means[fold_of, np.arange(n)]  # each row by the members that skipped its fold
            self.calibrator_ = CrossConformal(self.coverage, self.calib_neighbors).fit(
                self.domain_.tree, self.domain_.X_, Yt, oof, fold_means)
        else:
            self._gaussian_fallback(Xn, Yt.shape[1])

    def _fit_split(self, Xn: np.ndarray, Yn: np.ndarray, Yt: np.ndarray, rng: np.random.Generator) -> None:
        n = len(Xn)
        n_cal = int(round(self.calib_fraction * n))
        self.calibrated_ = n_cal >= self.min_calibration and n - n_cal >= 2
        perm = rng.permutation(n)
        cal_idx = perm[:n_cal] if self.calibrated_ else np.zeros(0, dtype=int)
        fit_idx = np.sort(perm[n_cal:]) if self.calibrated_ else np.arange(n)
        self.nets_, self.train_info_ = [], []
        for b in range(int(self.n_estimators)):
            seed = int(self.random_state) * 1000 + b
            member_rng = np.random.default_rng(seed)
            if self.n_estimators > 1:
                boot = member_rng.choice(fit_idx, size=fit_idx.size, replace=True)
                val = np.setdiff1d(fit_idx, boot)
            else:
                shuffled = member_rng.permutation(fit_idx)
                n_val = int(round(self.val_fraction * shuffled.size)) if shuffled.size >= 10 else 0
                val, boot = shuffled[:n_val], shuffled[n_val:]
            self._train_member(Xn, Yn, boot, val, seed)
        if self.calibrated_:
            mean, std = self._ensemble(Xn[cal_idx])
            self.calibrator_ = ConformalCalibrator(self.coverage).fit(Yt[cal_idx], mean, std)
        else:
            self._gaussian_fallback(Xn[fit_idx], Yt.shape[1])

    def _gaussian_fallback(self, Xn: np.ndarray, n_outputs: int) -> None:
        """Too few rows to calibrate: ensemble std times the Gaussian quantile (``calibrated_`` False)."""
        z = _GAUSS_Z.get(round(float(self.coverage), 2), 1.645)
        _, std = self._ensemble(Xn)
        self.calibrator_ = ConformalCalibrator(self.coverage)
        self.calibrator_.eps_ = self.calibrator_.eps_fraction * np.maximum(np.median(std, axis=0), 1e-12)
        self.calibrator_.quantile_ = np.full(n_outputs, z)
        self.calibrator_.n_calibration_ = 0

    def _relevance_columns(self, Y: np.ndarray) -> list[int]:
        """Sub-targets used for NMI ranking: each scalar property, up to 5 spread points of a function."""
        cols, start = [], 0
        for spec in self.target_specs_:
            picks = np.unique(np.linspace(0, spec.n_outputs - 1, min(5, spec.n_outputs)).round().astype(int))
            cols.extend(int(start + p) for p in picks)
            start += spec.n_outputs
        return cols

    # ------------------------------------------------------------------ predict
    def _scale(self, Xs: np.ndarray) -> np.ndarray:
        return (Xs - self.x_min_) / self.x_scale_ - 0.5

    def _prepare(self, X) -> np.ndarray:
        check_is_fitted(self, "nets_")
        X = validate_data(self, X, reset=False, ensure_all_finite=False, dtype=np.float64)
        return self._scale(self.cleaner_.transform(X[:, self.selected_idx_]))

    def _forward(self, Y: np.ndarray) -> np.ndarray:
        """Targets in the space the networks learn (log for positive, skewed targets)."""
        return np.log(Y) if self.target_transform == "log" else Y

    def _inverse(self, Yt: np.ndarray) -> np.ndarray:
        return np.exp(Yt) if self.target_transform == "log" else Yt

    def _member_predict(self, net: JointNet, Xn: np.ndarray) -> np.ndarray:
        """One member's predictions (rows, outputs) in the learned (transformed) target space."""
        with torch.no_grad():
            pred = torch.cat(net(torch.as_tensor(Xn, dtype=torch.float64)), dim=1).numpy()
        return pred * self.y_std_ + self.y_mean_

    def _members(self, Xn: np.ndarray) -> np.ndarray:
        """Member predictions (members, rows, outputs) in the learned (transformed) target space."""
        return np.stack([self._member_predict(net, Xn) for net in self.nets_])

    def _ensemble(self, Xn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        preds = self._members(Xn)
        return preds.mean(axis=0), preds.std(axis=0)

    def _shape(self, a: np.ndarray) -> np.ndarray:
        return a[:, 0] if self._y_ndim == 1 else a

    def predict(self, X) -> np.ndarray:
        """Ensemble mean, in the target's units."""
        mean, _ = self._ensemble(self._prepare(X))
        return self._shape(self._inverse(mean))

    def predict_dist(self, X) -> Prediction:
        """Mean, ensemble spread, conformal interval and applicability flag for each row."""
        Xn = self._prepare(X)
        preds = self._members(Xn)
        mean_t, std_t = preds.mean(axis=0), preds.std(axis=0)
        ok, dist = self.domain_.in_domain(Xn)
        interval_ok = np.ones(len(Xn), dtype=bool)
        if isinstance(self.calibrator_, CrossConformal):  # out of domain: never narrower than the members' spread
            floor = np.where(ok[:, None], 0.0, std_t)
            widening = getattr(self, "widening_", None)
            scale = None if widening is None else widening.factor(self._widening_distance(Xn, dist))
            if scale is not None:
                interval_ok = np.isfinite(scale).all(axis=1)
            lo, hi = self.calibrator_.interval(self.domain_.tree, Xn, mean_t, floor, scale)
            lo[~interval_ok], hi[~interval_ok] = np.nan, np.nan
        else:
            lo, hi = self.calibrator_.interval(mean_t, std_t)
        lower, upper = self._inverse(lo), self._inverse(hi)
        mean, std = self._inverse(mean_t), self._inverse(preds).std(axis=0)
        return Prediction(self._shape(mean), self._shape(std), self._shape(lower), self._shape(upper),
                          ok, dist, float(self.coverage), bool(self.calibrated_), interval_ok)

    def _widening_distance(self, Xn: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """The distance w(d) is read at. Two-stage: the mean over cross-fitting folds f of the distance to
        the training rows outside f, the same reference set an out-of-fold calibration row was measured
        against (its distance to all training rows would be smaller, and w_near, fitted without a floor,
        would then narrow the interval too much). Pooled (older models): the AD distance."""
        folds = getattr(self, "cv_fold_", None)
        if self.widening_form != "two_stage" or folds is None:
            return dist
        Xd = self.domain_.X_
        return np.mean([_mean_knn_distance(Xd[folds != f], Xn, self.ad_neighbors) for f in np.unique(folds)], axis=0)

    # ------------------------------------------------------------------ state for the registry
    def get_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors (float32 network weights, float64 arrays) and a JSON-able description of a fitted model."""
        check_is_fitted(self, "nets_")
        tensors = members_to_tensors(self.nets_)
        arrays = {"medians": self.cleaner_.medians_, "x_min": self.x_min_, "x_scale": self.x_scale_,
                  "y_mean": self.y_mean_, "y_std": self.y_std_, "conformal_quantile": self.calibrator_.quantile_,
                  "conformal_eps": self.calibrator_.eps_, "ad_train_X": self.domain_.X_}
        if isinstance(self.calibrator_, CrossConformal):
            arrays |= {"oof_residuals": self.calibrator_.residuals_, "conformal_shrink": self.calibrator_.shrink_}
        if getattr(self, "widening_", None) is not None:
            arrays |= {"widening_edges": self.widening_.edges_, "widening_factor": self.widening_.factor_}
            if self.widening_form == "two_stage":
                arrays["cv_fold"] = self.cv_fold_
        for key, value in arrays.items():
            dtype = np.float32 if key == "ad_train_X" else np.float64  # exact: see ApplicabilityDomain.fit
            tensors[f"array.{key}"] = torch.as_tensor(np.asarray(value, dtype=dtype)).contiguous()
        params = {k: v for k, v in self.get_params().items() if k != "cross_nmi"}
        meta = {
            "params": jsonable(params),
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": [str(n) for n in getattr(self, "feature_names_in_", [])],
            "selected_idx": [int(i) for i in self.selected_idx_],
            "selected_features": list(self.selected_names_),
            "relevance": None if self.relevance_ is None else [float(r) for r in self.relevance_],
            "targets": [{"name": t.name, "n_outputs": t.n_outputs, "group": t.group} for t in self.target_specs_],
            "y_ndim": int(self._y_ndim),
            "calibration": self.calibration_,
            "calibrated": bool(self.calibrated_),
            "n_calibration": int(self.calibrator_.n_calibration_),
            "ad_threshold": float(self.domain_.threshold_),
            "n_members": len(self.nets_),
            "cv_n_folds": int(getattr(self, "cv_n_folds_", 0)),
            "widening_n_calibration": int(getattr(getattr(self, "widening_", None), "n_calibration_", 0)),
            "train_info": self.train_info_,
        }
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> MODNetRegressor:
        """Rebuild a fitted regressor from ``get_state`` output (no pickle involved)."""
        params = dict(meta["params"])
        params.setdefault("calibration", "split")  # manifests written before cross-conformal existed
        params.setdefault("widening_form", "pooled")  # manifests written before the two-stage widening
        params["widths"] = tuple(tuple(int(w) for w in level) for level in params["widths"])
        for key in ("targets", "loss_weights"):
            if params.get(key) is not None:
                params[key] = tuple(tuple(t) if isinstance(t, list) else t for t in params[key])
        est = cls(**params)
        arr = {k[len("array."):]: v.numpy().astype(np.float64) for k, v in tensors.items() if k.startswith("array.")}
        est.n_features_in_ = int(meta["n_features_in"])
        if meta.get("feature_names_in"):
            est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        est.selected_idx_ = np.asarray(meta["selected_idx"], dtype=int)
        est.selected_names_ = list(meta["selected_features"])
        est.relevance_ = None if meta.get("relevance") is None else np.asarray(meta["relevance"])
        est.target_specs_ = [TargetSpec(t["name"], int(t["n_outputs"]), int(t["group"])) for t in meta["targets"]]
        est._y_ndim = int(meta["y_ndim"])
        est.calibrated_ = bool(meta["calibrated"])
        est.calibration_ = meta.get("calibration", "cross" if "oof_residuals" in arr else "split")
        est.cleaner_ = FeatureCleaner.from_medians(arr["medians"], est.selected_names_)
        est.x_min_, est.x_scale_ = arr["x_min"], arr["x_scale"]
        est.y_mean_, est.y_std_ = arr["y_mean"], arr["y_std"]
        est.domain_ = ApplicabilityDomain(est.ad_neighbors, est.ad_quantile)
        est.domain_.X_ = arr["ad_train_X"]
        est.domain_.threshold_ = float(meta["ad_threshold"])
        if "oof_residuals" in arr:
            est.calibrator_ = CrossConformal(est.coverage, est.calib_neighbors)
            est.calibrator_.residuals_ = arr["oof_residuals"]
            est.calibrator_.shrink_ = arr["conformal_shrink"]
            est.cv_n_folds_ = int(meta["cv_n_folds"])
        else:
            est.calibrator_ = ConformalCalibrator(est.coverage)
        est.calibrator_.quantile_ = arr["conformal_quantile"]
        est.calibrator_.eps_ = arr["conformal_eps"]
        est.calibrator_.n_calibration_ = int(meta["n_calibration"])
        est.widening_ = None  # models saved before the distance widening (or without it) have none
        if "widening_edges" in arr:
            est.widening_ = DistanceWidening(est.coverage)
            est.widening_.edges_ = arr["widening_edges"]
            est.widening_.factor_ = arr["widening_factor"].reshape(len(arr["widening_edges"]), -1)
            est.widening_.n_calibration_ = int(meta.get("widening_n_calibration", 0))
            if "cv_fold" in arr:
                est.cv_fold_ = arr["cv_fold"].astype(int)
        est.nets_ = []
        for i in range(int(meta["n_members"])):
            net = JointNet(len(est.selected_idx_), est.target_specs_, est.widths, est.activation,
                           est.dropout, seed=0)
            est.nets_.append(load_member(net, tensors, i))
        est.train_info_ = list(meta.get("train_info", []))
        return est


def _mean_knn_distance(reference: np.ndarray, X: np.ndarray, k: int, tree: cKDTree | None = None) -> np.ndarray:
    """``ApplicabilityDomain.distance`` of ``X`` to ``reference``: mean distance to its k nearest rows."""
    k = max(1, min(int(k), len(reference)))
    d, _ = (tree if tree is not None else cKDTree(reference)).query(X, k=k)
    return np.atleast_2d(d.T).T.mean(axis=1) if k > 1 else np.ravel(d)


def jsonable(value):
    """Plain JSON form of parameters and metadata: tuples become lists, numpy scalars Python ones,
    non-finite floats strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
