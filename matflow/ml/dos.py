"""``DOSHeadRegressor``: a network that predicts a phonon density of states g(ν) from features and
learns it from any functional of g that a material has a label for.

Why a DOS: S_vib(T), Cv(T), F_vib(T) at every temperature and the last DOS peak are all functionals
of one object. A model that outputs g(ν) gives them all, mutually consistent (F = U − TS, S = −dF/dT,
Cv → 3R) by construction, and can be trained on a mixture of labels: DFT Cv(300 K) for some
materials, the DFT last DOS peak for others, DFPT curves for a few, and a universal potential's whole
DOS and curves for any of them (a lower-weight signal, since the potential is softer than DFT).

Network: min-max scaled features -> MLP trunk -> logits over ``n_coarse`` bins of ``bin_THz`` on
0–``max_THz`` -> softmax. Each coarse bin's 3 p_j modes per atom are spread evenly over the fine label
grid (``thermo.FrequencyGrid``, 0.1 THz bins), so the output is non-negative and holds exactly 3 modes
per atom whatever the weights are. S, Cv, F follow from the fine DOS through
``thermo.thermo_from_dos_torch`` (differentiable), so a loss on any of them reaches the DOS.

Loss terms (mean absolute error, or squared with ``loss="mse"``, in units of the term's spread, so a
predictor of the training mean scores about 1; a material contributes only the terms it has a label
for; a batch without a term's label adds 0 for it):

* ``cv300``: DFT Cv(300 K), error / label standard deviation.
* ``peak``: DFT last-peak frequency through a smooth proxy: ``a · ν_α + b``, ν_α the frequency above
  which a fraction ``peak_alpha`` of the modes lie (a soft step of the complementary CDF, so it is
  differentiable and blind to the vanishing tails a softmax always leaves; an exponentially tilted mean
  is not). ``a, b`` are a least-squares fit of the exact last peak (``thermo.last_peak_THz``) on the
  training rows' potential DOSes (defaults when there are fewer than 20).
* ``S_dft``/``Cv_dft``: DFT curves on ``curve_temperatures`` (per-temperature spread).
* ``dos_pot``: a potential's DOS, Wasserstein-1 distance (integral of |ΔCDF|, THz) / the mean W1 of
  the labels to their training mean; ``S_pot``/``Cv_pot``: the potential's curves. All three are
  multiplied by ``potential_weight``. Universal potentials are softer than DFT, so the potential's
  frequencies are first stretched by ``potential_stretch`` (default: the median ratio of DFT to
  potential last peaks over training rows that have both) and its S, Cv recomputed from that DOS.

Each member early-stops on the DFT terms of its validation rows (``early_stopping="dft"``): the DFT
labels are the anchor, and stopping on the weighted total lets the potential's terms decide when the
DFT error is good enough.

Members and interval: ``n_estimators`` networks; the rows are dealt into max(members, ``cv_folds``)
folds and member m skips fold m (cross-fitting), early-stopping on ``val_fraction`` of its own
training rows. Each calibration row (one with an S(T) label, the potential's or DFT's, in a fold
some member skipped) is predicted by the member that skipped it; the conformal quantile
of |S_label − S_out-of-fold| at each temperature of 5–800 K gives a constant-width interval
S(T) ± q(T) (same for Cv). The reference on most rows is the potential's S, so q also holds the
potential's own error: the interval is on the conservative side for DFT. Outside 5–800 K no interval.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import nn

from matflow.atomistic.thermo import (
    R_GAS,
    FrequencyGrid,
    last_peak_THz,
    thermo_from_dos,
    thermo_from_dos_torch,
)
from matflow.featurize.runner import FeatureCleaner
from matflow.ml.network import load_member, members_to_tensors
from matflow.ml.uncertainty import ApplicabilityDomain, conformal_quantile

__all__ = ["DOSHeadRegressor", "DOS_FORMAT", "DOS_FORMAT_VERSION", "LABEL_TERMS", "CALIBRATION_TEMPERATURES_K",
           "DOSNet", "loss_terms", "prepare_targets", "stretch_dos"]

DOS_FORMAT = "matflow-dos"
DOS_FORMAT_VERSION = 1
FINE_GRID = FrequencyGrid()
PEAK_READOUT_SMEARS_THZ: tuple[float, ...] = (0.2, 0.5, 1.0, 1.5)
PEAK_READOUT_HEIGHTS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.35, 0.5)
"""Candidate peak-finder settings for reading the last peak off a predicted DOS (``fit`` picks one)."""
CALIBRATION_TEMPERATURES_K = tuple(float(t) for t in range(5, 801, 5))
DEFAULT_CURVE_T = (25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0)
LABEL_TERMS = {
    "cv300": "DFT Cv(300 K), J/K/mol-atom, shape (n,)",
    "peak_THz": "DFT last DOS peak, THz, shape (n,)",
    "S_dft": "DFT S(T) on curve_temperatures, J/K/mol-atom, shape (n, n_T)",
    "Cv_dft": "DFT Cv(T) on curve_temperatures, J/K/mol-atom, shape (n, n_T)",
    "dos_pot": "potential DOS on the 1200-bin label grid, states/THz/atom, shape (n, 1200)",
    "S_pot": "potential S(T) on curve_temperatures, shape (n, n_T)",
    "Cv_pot": "potential Cv(T) on curve_temperatures, shape (n, n_T)",
    "S_cal": "S(T) on CALIBRATION_TEMPERATURES_K for the interval (potential or DFT), shape (n, 160)",
    "Cv_cal": "Cv(T) on CALIBRATION_TEMPERATURES_K for the interval, shape (n, 160)",
}
_POTENTIAL_TERMS = ("dos_pot", "S_pot", "Cv_pot")
_DFT_TERMS = ("cv300", "peak_THz", "S_dft", "Cv_dft")
_Z = {0.8: 1.282, 0.9: 1.645, 0.95: 1.960}


def prepare_targets(targets: Mapping[str, np.ndarray], n: int, n_curve: int) -> dict[str, np.ndarray]:
    """Every term of ``LABEL_TERMS`` as a float array with NaN where a material has no label (terms
    left out are all NaN); raises ValueError naming a term of the wrong shape or an unknown one."""
    unknown = sorted(set(targets) - set(LABEL_TERMS))
    if unknown:
        raise ValueError(f"unknown label term(s) {unknown}; known: {', '.join(LABEL_TERMS)}")
    shapes = {"cv300": (n,), "peak_THz": (n,), "S_dft": (n, n_curve), "Cv_dft": (n, n_curve),
              "dos_pot": (n, FINE_GRID.n_bins), "S_pot": (n, n_curve), "Cv_pot": (n, n_curve),
              "S_cal": (n, len(CALIBRATION_TEMPERATURES_K)), "Cv_cal": (n, len(CALIBRATION_TEMPERATURES_K))}
    out = {}
    for key, shape in shapes.items():
        value = targets.get(key)
        arr = np.full(shape, np.nan) if value is None else np.asarray(value, dtype=np.float64)
        if arr.shape != shape:
            raise ValueError(f"label term {key!r}: shape {arr.shape}, expected {shape}")
        if np.isinf(arr).any():
            raise ValueError(f"label term {key!r} holds inf (use NaN for a missing label)")
        out[key] = arr
    return out


class DOSNet(nn.Module):
    """MLP trunk -> softmax over coarse bins; ``forward`` returns log-probabilities (rows, n_coarse)."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_coarse: int, seed: int = 0):
        super().__init__()
        gen = torch.random.get_rng_state()
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ELU()]
            width = int(h)
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_coarse)
        torch.random.set_rng_state(gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.trunk(x)), dim=-1)


def coarse_to_fine(p: torch.Tensor, factor: int) -> torch.Tensor:
    """Coarse bin probabilities (sum 1) -> fine-grid DOS in states per THz per atom (3 modes)."""
    return 3.0 * p.repeat_interleave(factor, dim=-1) / (factor * FINE_GRID.bin_THz)


def soft_upper_quantile(p: torch.Tensor, bin_THz: float, alpha: float, tau: float = 0.5) -> torch.Tensor:
    """Frequency (THz) above which a fraction ``alpha`` of the modes lie, as a smooth function of the
    bin probabilities ``p``: each bin counts sigmoid(ln(U/alpha) / tau), U the mass at and above it.

    On a log scale, so the gradient reaches bins far above the current quantile (a softmax leaves
    them 1e-5 of mass, enough to learn from) while those bins add almost nothing to the value
    (200 bins at U = 1e-5 add < 1e-4 THz with tau = 0.5); a step or a linear ramp of U gives a
    gradient only at the one or two bins where U crosses alpha."""
    upper = torch.flip(torch.cumsum(torch.flip(p, [-1]), -1), [-1]).clamp_min(1e-30)
    return bin_THz * torch.sigmoid((torch.log(upper) - math.log(alpha)) / tau).sum(-1)


def _w1(dos_a: torch.Tensor, dos_b: torch.Tensor) -> torch.Tensor:
    """Wasserstein-1 distance (THz) between DOS rows on the fine grid, per row."""
    da = torch.cumsum(dos_a, -1) * FINE_GRID.bin_THz / 3.0
    db = torch.cumsum(dos_b, -1) * FINE_GRID.bin_THz / 3.0
    return (da - db).abs().sum(-1) * FINE_GRID.bin_THz


def _penalty(err: torch.Tensor, loss: str) -> torch.Tensor:
    return err.abs().mean() if loss == "mae" else (err ** 2).mean()


def _masked_err(pred: torch.Tensor, label: torch.Tensor, scale: torch.Tensor, loss: str) -> tuple[torch.Tensor, int]:
    mask = torch.isfinite(label)
    if not bool(mask.any()):
        return pred.new_zeros(()), 0
    err = (pred - torch.where(mask, label, torch.zeros_like(label))) / scale
    return _penalty(err[mask], loss), int(mask.any(dim=-1).sum()) if label.ndim > 1 else int(mask.sum())


def loss_terms(log_p: torch.Tensor, labels: Mapping[str, torch.Tensor], scales: Mapping[str, torch.Tensor],
               *, factor: int, bin_THz: float, curve_T: Sequence[float], peak_alpha: float,
               peak_coef: tuple[float, float], loss: str = "mae") -> dict[str, tuple[torch.Tensor, int]]:
    """Each standardised loss term (mean absolute or squared error in units of the term's scale) with
    the number of rows that carry its label, for a batch.

    Rows without a label (NaN) add nothing to that term: it is a mean over labelled rows only.
    """
    p = log_p.exp()
    dos = coarse_to_fine(p, factor)
    temps = sorted(set(curve_T) | {300.0})
    th = thermo_from_dos_torch(dos, temps, FINE_GRID)
    i300 = temps.index(300.0)
    idx = torch.as_tensor([temps.index(float(t)) for t in curve_T])
    S, Cv = th["S_J_per_K_mol_atom"], th["Cv_J_per_K_mol_atom"]
    out = {"cv300": _masked_err(Cv[:, i300], labels["cv300"], scales["cv300"], loss)}
    proxy = peak_coef[0] * soft_upper_quantile(p, bin_THz, peak_alpha) + peak_coef[1]
    out["peak_THz"] = _masked_err(proxy, labels["peak_THz"], scales["peak_THz"], loss)
    for key, values in (("S_dft", S), ("Cv_dft", Cv), ("S_pot", S), ("Cv_pot", Cv)):
        out[key] = _masked_err(values[:, idx], labels[key], scales[key], loss)
    label_dos = labels["dos_pot"]
    rows = torch.isfinite(label_dos).all(dim=-1)
    if bool(rows.any()):
        out["dos_pot"] = _penalty(_w1(dos[rows], label_dos[rows]) / scales["dos_pot"], loss), int(rows.sum())
    else:
        out["dos_pot"] = (log_p.new_zeros(()), 0)
    return out


def stretch_dos(dos: np.ndarray, s: float) -> np.ndarray:
    """DOSes on ``FINE_GRID`` (rows, bins) with every frequency multiplied by ``s``, renormalised to 3
    modes per atom: how a softer potential's labels are put on the DFT frequency scale."""
    nu = FINE_GRID.centres_THz
    dos = np.stack([np.interp(nu / s, nu, d, left=0.0, right=0.0) for d in np.atleast_2d(dos)])
    return 3.0 * dos / (dos.sum(-1, keepdims=True) * FINE_GRID.bin_THz)


@dataclass
class DOSPrediction:
    """DOS head predictions for n structures at n_T temperatures (arrays (n, n_T)); ``lower``/``upper``
    NaN where no interval is calibrated (temperatures outside 5–800 K); ``dos`` the ensemble-mean DOS
    (n, 1200 bins of 0.1 THz) the thermodynamic functions come from."""

    temperatures_K: np.ndarray
    S: np.ndarray
    S_lower: np.ndarray
    S_upper: np.ndarray
    Cv: np.ndarray
    Cv_lower: np.ndarray
    Cv_upper: np.ndarray
    F: np.ndarray
    U: np.ndarray
    S_std: np.ndarray
    coverage: float
    calibrated: bool
    in_domain: np.ndarray | None = None
    ad_distance: np.ndarray | None = None
    dos: np.ndarray | None = None


class DOSHeadRegressor(BaseEstimator):
    """Phonon-DOS head trained on partial labels (module docstring). All parameters are plain values.

    hidden: widths of the trunk's layers; bin_THz: coarse output bin (a multiple of 0.1 THz);
    potential_weight: factor on the potential's terms; dft_weight: factor on the DFT terms;
    peak_alpha: mode fraction above the last-peak proxy; curve_temperatures: where curve labels sit;
    loss: "mae" (mean absolute standardised error, robust to the heavy tail of last-peak frequencies
    up to 110 THz) or "mse"; ad_neighbors/ad_quantile: the applicability domain (mean distance to the
    nearest training rows in the scaled feature space, threshold at that quantile of the training rows'
    own distances); a row outside it gets no interval, because the conformal quantiles were calibrated
    on rows like the training data; potential_stretch: factor s applied to the frequencies of the potential's
    DOS labels before they enter the loss (g(ν) -> g(ν/s)/s, its S and Cv recomputed): "fit" = median
    of DFT last peak / potential last peak over training rows with both (universal potentials are
    softer than DFT), a number, or 1.0 for none; early_stopping: "dft" (validation loss of the DFT
    terms only, when the validation rows have DFT labels) or "total".
    n_features: keep this many features, chosen by MODNet's NMI relevance/redundancy procedure
    (``selection.NMIFeatureSelector``) on the training rows of each label that decides most: DFT
    Cv(300 K), the DFT last peak and the potential's S(300 K), each ranked on the rows that have it and
    merged round-robin; None keeps every varying feature. min_nmi: the selector's relevance floor.
    cross_nmi: the feature-feature NMI matrix over the columns of ``X`` (square array or DataFrame in
    column order; features only, so it may come from all rows, as MODNet does), computed on the
    training rows when None. It is not saved with the model.
    """

    def __init__(self, hidden: tuple = (256, 256), bin_THz: float = 0.5, lr: float = 2e-3,
                 batch_size: int = 64, epochs: int = 300, patience: int = 30, weight_decay: float = 1e-5,
                 potential_weight: float = 0.3, dft_weight: float = 1.0, peak_alpha: float = 0.02,
                 curve_temperatures: tuple = DEFAULT_CURVE_T, loss: str = "mae", cv_folds: int = 5,
                 potential_stretch: float | str = "fit", early_stopping: str = "dft", n_estimators: int = 5, val_fraction: float = 0.1,
                 coverage: float = 0.9, min_calibration: int = 20, random_state: int = 0,
                 n_threads: int | None = None, ad_neighbors: int = 5, ad_quantile: float = 0.95,
                 n_features: int | None = None, min_nmi: float | str = "auto", cross_nmi=None):
        self.hidden = hidden
        self.bin_THz = bin_THz
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.potential_weight = potential_weight
        self.dft_weight = dft_weight
        self.peak_alpha = peak_alpha
        self.curve_temperatures = curve_temperatures
        self.loss = loss
        self.cv_folds = cv_folds
        self.potential_stretch = potential_stretch
        self.early_stopping = early_stopping
        self.n_estimators = n_estimators
        self.val_fraction = val_fraction
        self.coverage = coverage
        self.min_calibration = min_calibration
        self.random_state = random_state
        self.n_threads = n_threads
        self.ad_neighbors = ad_neighbors
        self.ad_quantile = ad_quantile
        self.n_features = n_features
        self.min_nmi = min_nmi
        self.cross_nmi = cross_nmi

    # ------------------------------------------------------------------ geometry
    @property
    def factor_(self) -> int:
        factor = int(round(self.bin_THz / FINE_GRID.bin_THz))
        if factor < 1 or abs(factor * FINE_GRID.bin_THz - self.bin_THz) > 1e-9 or FINE_GRID.n_bins % factor:
            raise ValueError(f"bin_THz={self.bin_THz}: must be a multiple of {FINE_GRID.bin_THz} THz "
                             f"that divides {FINE_GRID.max_THz:g} THz")
        return factor

    @property
    def n_coarse_(self) -> int:
        return FINE_GRID.n_bins // self.factor_

    # ------------------------------------------------------------------ fit
    def fit(self, X, targets: Mapping[str, np.ndarray]):
        """Fit on features ``X`` (rows, features; NaN allowed) and ``targets``: a mapping from the
        terms of ``LABEL_TERMS`` to arrays with NaN where a material lacks that label."""
        if self.loss not in ("mae", "mse"):
            raise ValueError(f"loss must be 'mae' or 'mse', got {self.loss!r}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"X must be 2-D with at least 2 rows, got shape {X.shape}")
        curve_T = tuple(float(t) for t in self.curve_temperatures)
        y = prepare_targets(targets, len(X), len(curve_T))
        y["_curve_T"] = np.asarray(curve_T)
        labelled = np.zeros(len(X), dtype=bool)
        for key, arr in y.items():
            if key not in ("S_cal", "Cv_cal", "_curve_T"):
                labelled |= np.isfinite(arr).reshape(len(X), -1).any(axis=1)
        if not labelled.any():
            raise ValueError("no material carries any label")
        self.n_features_in_ = X.shape[1]
        self.label_counts_ = {k: int(np.isfinite(v).reshape(len(X), -1).any(axis=1).sum()) for k, v in y.items()
                              if k != "_curve_T"}
        threads = torch.get_num_threads()
        if self.n_threads:
            torch.set_num_threads(int(self.n_threads))
        try:
            self._fit(X, y)
        finally:
            torch.set_num_threads(threads)
        return self

    def _fit(self, X: np.ndarray, y: dict[str, np.ndarray]) -> None:
        factor, n = self.factor_, len(X)
        self.cleaner_ = FeatureCleaner().fit(X)
        keep = np.flatnonzero(self.cleaner_.keep_)
        if keep.size == 0:
            keep = np.arange(min(1, X.shape[1]))
        self.keep_idx_ = keep
        self.medians_ = np.nan_to_num(self.cleaner_.medians_[keep])
        Xk = self._clean(X)
        self.feature_selection_ = None
        if self.n_features is not None and int(self.n_features) < keep.size:
            chosen = self._select_features(Xk, y)
            self.keep_idx_, self.medians_, Xk = keep[chosen], self.medians_[chosen], Xk[:, chosen]
        self.x_min_ = Xk.min(axis=0)
        span = Xk.max(axis=0) - self.x_min_
        self.x_scale_ = np.where(span > 0, span, 1.0)
        Xn = self._scale(Xk)
        self.domain_ = ApplicabilityDomain(int(self.ad_neighbors), float(self.ad_quantile)).fit(Xn)
        self.stretch_ = self._stretch(y)
        if self.stretch_ != 1.0:
            y = self._stretched(y, self.stretch_)
        self.peak_coef_ = self._peak_calibration(y["dos_pot"])
        y.pop("_curve_T", None)
        self.scales_ = self._scales(y)
        self.prior_logits_ = self._prior(y["dos_pot"], factor)
        rng = np.random.default_rng(self.random_state)
        n_members = max(1, int(self.n_estimators))
        # at least 5 folds, so that each member trains on >= 80 % of the rows whatever their number
        n_folds = max(n_members, int(self.cv_folds)) if n_members >= 2 else 1
        fold_of = np.empty(n, dtype=int)
        fold_of[rng.permutation(n)] = np.arange(n) % n_folds
        self.nets_, self.train_info_ = [], []
        for m in range(n_members):
            seed = int(self.random_state) * 1000 + m
            rows = np.flatnonzero(fold_of != m) if n_folds > 1 else np.arange(n)
            rows = np.random.default_rng(seed).permutation(rows)
            n_val = int(round(self.val_fraction * rows.size)) if rows.size >= 10 else 0
            net, info = self._train(Xn, y, np.sort(rows[n_val:]), np.sort(rows[:n_val]), seed)
            self.nets_.append(net)
            self.train_info_.append(info)
        self._calibrate(Xn, y, fold_of, n_folds)
        self.peak_readout_ = self._fit_peak_readout(Xn, y, fold_of)

    def _select_features(self, Xk: np.ndarray, y: dict[str, np.ndarray]) -> np.ndarray:
        """Columns of ``Xk`` to keep (sorted): NMI selection per label on the rows that have it."""
        import pandas as pd

        from matflow.ml.selection import NMIFeatureSelector, cross_nmi, merge_round_robin

        n_keep = int(self.n_features)
        if n_keep < 1:
            raise ValueError(f"n_features={self.n_features!r}: must be None or >= 1")
        names = np.array([f"x{i}" for i in self.keep_idx_], dtype=object)
        if self.cross_nmi is not None:
            full = np.asarray(self.cross_nmi, dtype=float)
            if full.shape != (self.n_features_in_, self.n_features_in_):
                raise ValueError(f"cross_nmi has shape {full.shape}; expected ({self.n_features_in_}, "
                                 f"{self.n_features_in_}), one row and column per feature of X")
            cross = pd.DataFrame(full[np.ix_(self.keep_idx_, self.keep_idx_)], index=names, columns=names)
        else:
            cross = cross_nmi(pd.DataFrame(Xk, columns=names), random_state=int(self.random_state))
        curve_T = np.asarray(y["_curve_T"], dtype=float)
        i300 = int(np.argmin(np.abs(curve_T - 300.0)))
        labels = {"cv300": y["cv300"], "peak_THz": y["peak_THz"], "S_pot_300K": y["S_pot"][:, i300]}
        rankings, used = [], {}
        for name, values in labels.items():
            rows = np.flatnonzero(np.isfinite(values))
            if rows.size < 20 or np.ptp(values[rows]) == 0:
                continue
            selector = NMIFeatureSelector(n_features=n_keep, min_nmi=self.min_nmi, cross_nmi=cross,
                                          random_state=int(self.random_state))
            selector.fit(pd.DataFrame(Xk[rows], columns=names), values[rows])
            rankings.append(selector.ranking_)
            used[name] = {"n_rows": int(rows.size), "n_informative": int(selector.n_informative_)}
        if not rankings:  # no label with enough rows to rank on: keep everything
            return np.arange(Xk.shape[1])
        chosen = np.sort(np.asarray(merge_round_robin(rankings, n_max=n_keep), dtype=int))
        self.feature_selection_ = {"n_selected": int(chosen.size), "labels": used}
        return chosen

    def _stretch(self, y: dict[str, np.ndarray]) -> float:
        if self.potential_stretch != "fit":
            value = float(self.potential_stretch)
            if not (math.isfinite(value) and 0.5 <= value <= 2.0):
                raise ValueError(f"potential_stretch={self.potential_stretch!r}: need 'fit' or a number in [0.5, 2]")
            return value
        rows = np.flatnonzero(np.isfinite(y["dos_pot"]).all(axis=1) & np.isfinite(y["peak_THz"]))
        if rows.size < 10:
            return 1.0
        pot = np.array([last_peak_THz(d, FINE_GRID) for d in y["dos_pot"][rows]])
        return float(np.median(y["peak_THz"][rows] / pot))

    @staticmethod
    def _stretched(y: dict[str, np.ndarray], s: float) -> dict[str, np.ndarray]:
        """Potential DOS labels with frequencies times ``s`` (renormalised), and their S, Cv recomputed."""
        y = dict(y)
        rows = np.flatnonzero(np.isfinite(y["dos_pot"]).all(axis=1))
        if rows.size == 0:
            return y
        dos = stretch_dos(y["dos_pot"][rows], s)
        y["dos_pot"] = y["dos_pot"].copy()
        y["dos_pot"][rows] = dos
        curve_T = [float(t) for t in np.ravel(y.get("_curve_T", []))]
        for key_S, key_Cv, temps, only in (("S_pot", "Cv_pot", curve_T, rows),
                                           ("S_cal", "Cv_cal", CALIBRATION_TEMPERATURES_K,
                                            rows[~np.isfinite(y["S_dft"][rows]).any(axis=1)])):
            if not len(temps) or only.size == 0:
                continue
            th = thermo_from_dos(y["dos_pot"][only], temps, FINE_GRID)
            for key, col in ((key_S, "S_J_per_K_mol_atom"), (key_Cv, "Cv_J_per_K_mol_atom")):
                y[key] = y[key].copy()
                keep = np.isfinite(y[key][only]).all(axis=1)
                y[key][only[keep]] = th[col][keep]
        return y

    def _peak_calibration(self, dos_pot: np.ndarray) -> tuple[float, float]:
        """(a, b) of peak ≈ a ν_α + b, least squares on the potential DOSes of the training rows."""
        rows = np.flatnonzero(np.isfinite(dos_pot).all(axis=1))
        if rows.size < 20:
            return (1.04, -0.87)  # from SevenNet-0 DOSes of 158 Matbench structures, alpha 0.02, 0.5 THz bins
        factor = self.factor_
        p = dos_pot[rows] * FINE_GRID.bin_THz / 3.0
        pc = torch.as_tensor(p.reshape(len(rows), -1, factor).sum(-1))
        q = soft_upper_quantile(pc, self.bin_THz, self.peak_alpha).numpy()
        peaks = np.array([last_peak_THz(d, FINE_GRID) for d in dos_pot[rows]])
        a, b = np.linalg.lstsq(np.vstack([q, np.ones_like(q)]).T, peaks, rcond=None)[0]
        return (float(a), float(b))

    def _scales(self, y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-term standardisation: label std (per temperature for curves); mean W1 for the DOS."""
        scales = {}
        for key in ("cv300", "peak_THz", "S_dft", "Cv_dft", "S_pot", "Cv_pot"):
            arr = y[key]
            with np.errstate(all="ignore"):
                sd = np.nanstd(arr, axis=0) if np.isfinite(arr).sum() >= 2 else np.ones(arr.shape[1:])
            sd = np.where(np.isfinite(sd) & (sd > 1e-6), sd, 1.0)
            scales[key] = np.asarray(sd, dtype=np.float64)
        rows = np.isfinite(y["dos_pot"]).all(axis=1)
        if rows.sum() >= 2:
            d = torch.as_tensor(y["dos_pot"][rows])
            w1 = _w1(d, d.mean(0, keepdim=True).expand_as(d)).mean().item()
            scales["dos_pot"] = np.asarray(max(w1, 1e-3))
        else:
            scales["dos_pot"] = np.asarray(1.0)
        return scales

    def _prior(self, dos_pot: np.ndarray, factor: int) -> np.ndarray:
        """Initial output: the mean potential DOS, or a Debye-like ν² to 10 THz, plus a floor."""
        rows = np.isfinite(dos_pot).all(axis=1)
        centres = (np.arange(self.n_coarse_) + 0.5) * self.bin_THz
        if rows.sum() >= 5:
            p = dos_pot[rows].mean(0).reshape(-1, factor).sum(-1)
        else:
            p = np.where(centres < 10.0, centres ** 2, 0.0)
        p = p / p.sum() + 1e-5
        return np.log(p / p.sum())

    def _train(self, Xn: np.ndarray, y: dict[str, np.ndarray], train: np.ndarray, val: np.ndarray,
               seed: int) -> tuple[DOSNet, dict]:
        net = DOSNet(Xn.shape[1], self.hidden, self.n_coarse_, seed=seed)
        with torch.no_grad():
            net.head.bias.copy_(torch.as_tensor(self.prior_logits_, dtype=torch.float32))
            net.head.weight.mul_(0.1)
        Xt = torch.as_tensor(Xn, dtype=torch.float32)
        Y = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in y.items()}
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(2, self.patience // 3))
        gen = torch.Generator().manual_seed(seed)
        train_t, val_t = torch.as_tensor(train), torch.as_tensor(val)
        # early stopping on the DFT terms when the validation rows have DFT labels: they are the anchor
        dft_val = any(bool(torch.isfinite(Y[k][val_t]).any()) for k in _DFT_TERMS) if len(val_t) else False
        stop_on = _DFT_TERMS if (self.early_stopping == "dft" and self.dft_weight > 0 and dft_val) else None
        best, best_loss, best_epoch, epoch = None, math.inf, 0, 0
        for epoch in range(1, int(self.epochs) + 1):
            net.train()
            order = train_t[torch.randperm(len(train_t), generator=gen)]
            for start in range(0, len(order), int(self.batch_size)):
                idx = order[start:start + int(self.batch_size)]
                opt.zero_grad()
                loss = self._total(net, Xt, Y, idx)
                loss.backward()
                opt.step()
            if len(val_t) == 0:
                continue
            net.eval()
            with torch.no_grad():
                val_loss = float(self._total(net, Xt, Y, val_t, stop_on))
            sched.step(val_loss)
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, best = val_loss, epoch, copy.deepcopy(net.state_dict())
            elif epoch - best_epoch >= int(self.patience):
                break
        if best is not None:
            net.load_state_dict(best)
        return net.double().eval(), {"best_epoch": best_epoch if len(val_t) else epoch, "n_epochs": epoch}

    def _weights(self) -> dict[str, float]:
        w = {k: float(self.dft_weight) for k in ("cv300", "peak_THz", "S_dft", "Cv_dft")}
        return w | {k: float(self.potential_weight) for k in _POTENTIAL_TERMS}

    def _total(self, net: DOSNet, Xt: torch.Tensor, Y: dict[str, torch.Tensor], idx: torch.Tensor,
               only: tuple[str, ...] | None = None) -> torch.Tensor:
        log_p = net(Xt[idx])
        scales = {k: torch.as_tensor(v, dtype=log_p.dtype) for k, v in self.scales_.items()}
        terms = loss_terms(log_p, {k: v[idx].to(log_p.dtype) for k, v in Y.items()}, scales,
                           factor=self.factor_, bin_THz=self.bin_THz,
                           curve_T=tuple(float(t) for t in self.curve_temperatures),
                           peak_alpha=self.peak_alpha, peak_coef=self.peak_coef_, loss=self.loss)
        weights = self._weights()
        total = log_p.new_zeros(())
        for key, (value, count) in terms.items():
            if count and weights[key] > 0 and (only is None or key in only):
                total = total + weights[key] * value
        return total

    def _calibrate(self, Xn: np.ndarray, y: dict[str, np.ndarray], fold_of: np.ndarray, n_folds: int) -> None:
        """Conformal q(T) for S and Cv from out-of-fold predictions of the rows with S_cal/Cv_cal."""
        temps = np.asarray(CALIBRATION_TEMPERATURES_K)
        self.q_S_ = np.full(temps.size, np.nan)
        self.q_Cv_ = np.full(temps.size, np.nan)
        self.n_calibration_ = 0
        skipped = fold_of < len(self.nets_)  # rows some member never saw (folds 0..members-1)
        rows = np.flatnonzero(np.isfinite(y["S_cal"]).all(axis=1) & np.isfinite(y["Cv_cal"]).all(axis=1) & skipped)
        self.calibrated_ = n_folds > 1 and rows.size >= int(self.min_calibration)
        if not self.calibrated_:
            return
        S_oof, Cv_oof = np.empty((rows.size, temps.size)), np.empty((rows.size, temps.size))
        for m in range(len(self.nets_)):
            sel = fold_of[rows] == m
            if sel.any():
                th = thermo_from_dos(self._member_dos(self.nets_[m], Xn[rows[sel]]), temps, FINE_GRID)
                S_oof[sel], Cv_oof[sel] = th["S_J_per_K_mol_atom"], th["Cv_J_per_K_mol_atom"]
        rS, rC = np.abs(y["S_cal"][rows] - S_oof), np.abs(y["Cv_cal"][rows] - Cv_oof)
        self.q_S_ = np.array([conformal_quantile(rS[:, j], self.coverage) for j in range(temps.size)])
        self.q_Cv_ = np.array([conformal_quantile(rC[:, j], self.coverage) for j in range(temps.size)])
        self.n_calibration_ = int(rows.size)

    def _fit_peak_readout(self, Xn: np.ndarray, y: dict[str, np.ndarray], fold_of: np.ndarray) -> dict:
        """How to read the last peak off a predicted DOS, chosen on out-of-fold training rows.

        The network's DOS is blocky (``bin_THz`` bins), so a peak finder tuned for a 0.1-THz mesh
        DOS picks small steps near its top; a wider smear and a higher relative height, or the
        training proxy itself, may read it better. Each candidate is scored by its MAE against the
        DFT last peak on rows that member ``m`` never trained on (fold ``m``), so no row outside
        the training set is looked at; the default readout is kept when fewer than
        ``min_calibration`` such rows exist.
        """
        default = {"method": "find_peaks", "smear_THz": 0.2, "min_rel_height": 0.05,
                   "oof_mae_THz": None, "n_rows": 0, "candidates": []}
        rows = np.flatnonzero(np.isfinite(y["peak_THz"]) & (fold_of < len(self.nets_)))
        if len(self.nets_) < 2 or rows.size < int(self.min_calibration):
            return default
        dos = np.empty((rows.size, FINE_GRID.n_bins))
        for m in range(len(self.nets_)):
            sel = fold_of[rows] == m
            if sel.any():
                dos[sel] = self._member_dos(self.nets_[m], Xn[rows[sel]])
        truth = y["peak_THz"][rows]
        candidates = [{"method": "proxy", "oof_mae_THz": float(np.mean(np.abs(self._proxy_peak(dos) - truth)))}]
        for smear in PEAK_READOUT_SMEARS_THZ:
            for height in PEAK_READOUT_HEIGHTS:
                peaks = np.array([last_peak_THz(d, FINE_GRID, smear_THz=smear, min_rel_height=height) for d in dos])
                candidates.append({"method": "find_peaks", "smear_THz": smear, "min_rel_height": height,
                                   "oof_mae_THz": float(np.mean(np.abs(peaks - truth)))})
        best = min(candidates, key=lambda c: c["oof_mae_THz"])
        return {"smear_THz": None, "min_rel_height": None, **best, "n_rows": int(rows.size),
                "candidates": candidates}

    def _proxy_peak(self, dos: np.ndarray) -> np.ndarray:
        p = torch.as_tensor(dos * FINE_GRID.bin_THz / 3.0).reshape(len(dos), -1, self.factor_).sum(-1)
        return self.peak_coef_[0] * soft_upper_quantile(p, self.bin_THz, self.peak_alpha).numpy() + self.peak_coef_[1]

    # ------------------------------------------------------------------ predict
    def _clean(self, X: np.ndarray) -> np.ndarray:
        Xk = np.array(X[:, self.keep_idx_], dtype=np.float64)
        bad = ~np.isfinite(Xk)
        Xk[bad] = np.broadcast_to(self.medians_, Xk.shape)[bad]
        return Xk

    def _scale(self, Xk: np.ndarray) -> np.ndarray:
        return (Xk - self.x_min_) / self.x_scale_ - 0.5

    def _prepare(self, X) -> np.ndarray:
        check_is_fitted(self, "nets_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; the model takes {self.n_features_in_} features")
        return self._scale(self._clean(X))

    def _member_dos(self, net: DOSNet, Xn: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            p = net(torch.as_tensor(Xn, dtype=torch.float64)).exp()
            return coarse_to_fine(p, self.factor_).numpy()

    def _members_dos(self, Xn: np.ndarray) -> np.ndarray:
        return np.stack([self._member_dos(net, Xn) for net in self.nets_])

    def predict_member_dos(self, X) -> np.ndarray:
        """DOS of every member (members, rows, 1200 bins), states per THz per atom."""
        return self._members_dos(self._prepare(X))

    def predict_dos(self, X) -> np.ndarray:
        """Ensemble-mean DOS (rows, 1200 bins of 0.1 THz), states per THz per atom, 3 modes per atom."""
        return self.predict_member_dos(X).mean(axis=0)

    def predict_last_peak(self, X) -> dict[str, np.ndarray]:
        """Last DOS peak (THz) per row of the ensemble-mean DOS: ``find_peaks`` with the mesh-DOS
        settings, the training proxy, and ``readout_THz`` by the readout chosen in ``fit`` on
        out-of-fold training rows (``peak_readout_``)."""
        dos = self.predict_dos(X)
        exact = np.array([last_peak_THz(d, FINE_GRID) for d in dos])
        proxy = self._proxy_peak(dos)
        readout = getattr(self, "peak_readout_", None) or {"method": "find_peaks", "smear_THz": 0.2,
                                                            "min_rel_height": 0.05}
        if readout["method"] == "proxy":
            chosen = proxy
        else:
            chosen = np.array([last_peak_THz(d, FINE_GRID, smear_THz=readout["smear_THz"],
                                             min_rel_height=readout["min_rel_height"]) for d in dos])
        return {"find_peaks_THz": exact, "proxy_THz": proxy, "readout_THz": chosen}

    def predict_thermo(self, X, temperatures_K=(305.0,)) -> DOSPrediction:
        """S, Cv (J/K/mol-atom), F, U (kJ/mol-atom) of the ensemble-mean DOS at each temperature, with
        conformal intervals for S and Cv (NaN outside the calibrated 5–800 K and for rows outside the
        applicability domain; ``in_domain`` is None for models saved without a domain)."""
        Xn = self._prepare(X)
        members = self._members_dos(Xn)
        domain = getattr(self, "domain_", None)
        in_domain, dist = domain.in_domain(Xn) if domain is not None else (None, None)
        dos = members.mean(axis=0)
        t = np.atleast_1d(np.asarray(temperatures_K, dtype=np.float64))
        th = thermo_from_dos(dos, t, FINE_GRID)
        per_member = np.stack([thermo_from_dos(d, t, FINE_GRID)["S_J_per_K_mol_atom"] for d in members])
        S, Cv = th["S_J_per_K_mol_atom"], th["Cv_J_per_K_mol_atom"]
        cal = np.asarray(CALIBRATION_TEMPERATURES_K)
        inside = (t >= cal[0]) & (t <= cal[-1])
        if self.calibrated_:
            qS = np.where(inside, np.interp(t, cal, self.q_S_), np.nan)
            qC = np.where(inside, np.interp(t, cal, self.q_Cv_), np.nan)
        else:  # too few calibration rows: the members' spread times the Gaussian quantile
            z = _Z.get(round(float(self.coverage), 2), 1.645)
            per_member_cv = np.stack([thermo_from_dos(d, t, FINE_GRID)["Cv_J_per_K_mol_atom"] for d in members])
            qS = np.where(inside, z * per_member.std(axis=0), np.nan)
            qC = np.where(inside, z * per_member_cv.std(axis=0), np.nan)
        qS, qC = np.broadcast_to(qS, S.shape).copy(), np.broadcast_to(qC, Cv.shape).copy()
        if in_domain is not None:
            qS[~in_domain], qC[~in_domain] = np.nan, np.nan
        return DOSPrediction(t, S, S - qS, S + qS, Cv, np.maximum(Cv - qC, 0.0), np.minimum(Cv + qC, 3 * R_GAS),
                             th["F_kJ_per_mol_atom"], th["U_kJ_per_mol_atom"], per_member.std(axis=0),
                             float(self.coverage), bool(self.calibrated_), in_domain, dist, dos)

    # ------------------------------------------------------------------ state for the registry
    def get_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """float32 network weights and float64 arrays as tensors, and JSON metadata (no pickle)."""
        check_is_fitted(self, "nets_")
        tensors = members_to_tensors(self.nets_)
        arrays = {"keep_idx": self.keep_idx_.astype(np.float64), "medians": self.medians_, "x_min": self.x_min_,
                  "x_scale": self.x_scale_, "q_S": self.q_S_, "q_Cv": self.q_Cv_, "prior_logits": self.prior_logits_}
        arrays |= {f"scale.{k}": np.atleast_1d(v) for k, v in self.scales_.items()}
        for key, value in arrays.items():
            tensors[f"array.{key}"] = torch.as_tensor(np.asarray(value, dtype=np.float64)).contiguous()
        if getattr(self, "domain_", None) is not None:  # float32 holds the reference rows losslessly (see fit)
            tensors["domain.X"] = torch.as_tensor(self.domain_.X_.astype(np.float32)).contiguous()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()
                  if k != "cross_nmi"}  # a fitting aid over all input features, not part of the model
        meta = {"params": params, "feature_selection": getattr(self, "feature_selection_", None), "n_features_in": int(self.n_features_in_), "n_members": len(self.nets_),
                "peak_coef": list(self.peak_coef_), "potential_stretch_fitted": float(self.stretch_), "calibrated": bool(self.calibrated_),
                "n_calibration": int(self.n_calibration_), "label_counts": self.label_counts_,
                "ad_threshold": (float(self.domain_.threshold_) if getattr(self, "domain_", None) is not None
                                 else None),
                "peak_readout": getattr(self, "peak_readout_", None),
                "train_info": self.train_info_}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> DOSHeadRegressor:
        """Rebuild a fitted model from ``get_state`` output."""
        params = dict(meta["params"])
        params["hidden"] = tuple(int(h) for h in params["hidden"])
        params["curve_temperatures"] = tuple(float(t) for t in params["curve_temperatures"])
        est = cls(**params)
        arr = {k[len("array."):]: v.numpy().astype(np.float64) for k, v in tensors.items() if k.startswith("array.")}
        est.n_features_in_ = int(meta["n_features_in"])
        est.keep_idx_ = arr["keep_idx"].astype(int)
        est.medians_, est.x_min_, est.x_scale_ = arr["medians"], arr["x_min"], arr["x_scale"]
        est.q_S_, est.q_Cv_, est.prior_logits_ = arr["q_S"], arr["q_Cv"], arr["prior_logits"]
        est.scales_ = {k[len("scale."):]: v for k, v in arr.items() if k.startswith("scale.")}
        est.peak_coef_ = tuple(float(c) for c in meta["peak_coef"])
        est.stretch_ = float(meta.get("potential_stretch_fitted", 1.0))
        est.calibrated_ = bool(meta["calibrated"])
        est.n_calibration_ = int(meta["n_calibration"])
        est.label_counts_ = dict(meta.get("label_counts", {}))
        est.train_info_ = list(meta.get("train_info", []))
        est.peak_readout_ = meta.get("peak_readout")  # None: saved before the readout was fitted
        est.feature_selection_ = meta.get("feature_selection")
        est.domain_ = None  # models saved before the applicability domain have none
        if "domain.X" in tensors and meta.get("ad_threshold") is not None:
            est.domain_ = ApplicabilityDomain(est.ad_neighbors, est.ad_quantile)
            est.domain_.X_ = tensors["domain.X"].numpy().astype(np.float64)
            est.domain_.threshold_ = float(meta["ad_threshold"])
        est.nets_ = []
        for i in range(int(meta["n_members"])):
            est.nets_.append(load_member(DOSNet(len(est.keep_idx_), est.hidden, est.n_coarse_), tensors, i))
        return est
