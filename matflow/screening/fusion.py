"""Dempster–Shafer fusion of evidence sources with reliabilities learned from held-out predictions.

Each source gives a mass function over the phase frame. Before combination each is discounted by a
rate α (Shafer 1976; α = 1 - reliability): a source that is often wrong is made to say less. The
rates are fitted on the training rows only, from *out-of-fold* masses (inner cross-validation
grouped by element set), because a source scored on the labels it was trained on looks perfectly
reliable. This follows the reliability-weighted fusion of Ha et al., "Synergistic fusion of
multi-source knowledge via evidence theory for high-entropy alloy discovery", arXiv:2502.14631
(2025); the rates minimise the multi-class Brier score (Brier, Mon. Weather Rev. 78, 1 (1950)) of
the fused pignistic probability (Smets & Kennes, Artif. Intell. 66, 191 (1994)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GroupKFold

from matflow.evidence import RULES, TotalConflictError, combine, discount, pignistic
from matflow.screening.composition import Composition, parse_composition
from matflow.screening.phases import PHASES
from matflow.screening.sources.base import EvidenceSource

DEFAULT_RATE_GRID: tuple[float, ...] = (0.01, *np.round(np.arange(0.05, 1.0, 0.05), 2), 1.0)
"""Discount rates tried per source. The smallest is 0.01, not 0, so that Dempster's rule always
keeps some mass on Ω and never meets total conflict on a new candidate."""

_PHASE_INDEX = {phase: i for i, phase in enumerate(PHASES)}


class FusionError(ValueError):
    """Bad configuration or input of the fusion; the message names it."""


BASE_RATES: tuple[str, ...] = ("uniform", "training", "auto")
"""How the pignistic projection shares a set's mass among its phases: equally (Smets), in
proportion to the phases' frequencies in the training labels, or whichever of the two gives the
lower inner-fold Brier score (``EvidenceFusion(base_rates=...)``)."""


def single_phase_probability(masses: np.ndarray, base_rate: np.ndarray | None = None) -> np.ndarray:
    """P(single-phase solid solution) = BetP(FCC) + BetP(BCC) + BetP(HCP) (``base_rate``: see
    ``matflow.evidence.pignistic``; None = equal rates)."""
    bet = pignistic(masses, base_rate)
    return bet[..., :3].sum(axis=-1)


def fcc_probability(masses: np.ndarray, base_rate: np.ndarray | None = None) -> np.ndarray:
    """P(FCC | FCC or BCC) = BetP(FCC) / (BetP(FCC) + BetP(BCC)); 0.5 where both are 0."""
    bet = pignistic(masses, base_rate)
    denom = bet[..., 0] + bet[..., 1]
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, bet[..., 0] / safe, 0.5)


def brier_multiclass(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance of the 4-phase probability from the one-hot label (0 best, 2 worst)."""
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def best_accuracy_threshold(p: np.ndarray, truth: np.ndarray) -> float:
    """The decision threshold on p that maximises accuracy on (p, truth); 0.5 if p is constant."""
    candidates = np.unique(np.round(p, 4))
    if len(candidates) < 2:
        return 0.5
    candidates = np.quantile(p, np.linspace(0.02, 0.98, 97))
    scores = [np.mean((p >= t) == truth) for t in candidates]
    return float(candidates[int(np.argmax(scores))])


def _fused(
    masses: Sequence[np.ndarray], rates: Sequence[float], rule: str
) -> tuple[np.ndarray, np.ndarray]:
    discounted = [discount(m, rate) for m, rate in zip(masses, rates, strict=True)]
    return combine(discounted, rule=rule)


class EvidenceFusion(BaseEstimator):
    """Discount, then combine, the mass functions of several evidence sources.

    Parameters
    ----------
    sources: the evidence sources (unfitted; each is cloned and fitted on the training rows).
    rule: combination rule, one of ``matflow.evidence.RULES`` ("dempster", "yager",
        "dubois_prade", ...).
    reliabilities: "fit" (discount rates learned by inner grouped CV), a mapping source name ->
        reliability in [0, 1] (rate = 1 - reliability), or None (every source fully trusted).
    n_inner_splits: grouped inner folds that produce the out-of-fold masses for fitting.
    rate_grid: discount rates tried for each source (coordinate descent over sources).
    n_passes: passes of the coordinate descent.
    base_rates: how ignorance is turned into probability (``BASE_RATES``): "uniform" (Smets'
        pignistic transform, where Ω gives 3/4 of its mass to the three single-phase classes),
        "training" (phase frequencies of the training labels, add-one smoothed) or "auto" (the
        one whose fitted discount rates give the lower inner Brier score; "uniform" when the
        rates are not fitted). Fitted: ``base_rate_`` (None = uniform), ``base_rate_choice_``.
    """

    def __init__(
        self,
        sources: list[EvidenceSource],
        rule: str = "dempster",
        reliabilities: str | Mapping[str, float] | None = "fit",
        n_inner_splits: int = 3,
        rate_grid: Sequence[float] | None = None,
        n_passes: int = 2,
        base_rates: str = "uniform",
    ):
        self.sources = sources
        self.rule = rule
        self.reliabilities = reliabilities
        self.n_inner_splits = n_inner_splits
        self.rate_grid = rate_grid
        self.n_passes = n_passes
        self.base_rates = base_rates

    # ----------------------------------------------------------------------------- checks
    def _check_config(self) -> None:
        if not self.sources:
            raise FusionError("sources: empty; give at least one evidence source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise FusionError(f"sources: duplicate names {names}")
        for source in self.sources:
            if not isinstance(source, EvidenceSource):
                raise FusionError(f"sources: {source!r} is not an EvidenceSource")
        if self.rule not in RULES:
            raise FusionError(f"rule {self.rule!r}: expected one of {', '.join(RULES)}")
        rel = self.reliabilities
        if isinstance(rel, str) and rel != "fit":
            raise FusionError(f"reliabilities {rel!r}: expected 'fit', a mapping or None")
        if isinstance(rel, Mapping):
            for name in names:
                if name not in rel:
                    raise FusionError(f"reliabilities: no value for source {name!r}")
                value = float(rel[name])
                if not 0.0 <= value <= 1.0:
                    raise FusionError(f"reliabilities[{name!r}] = {value}: must be in [0, 1]")
        if self.n_inner_splits < 2:
            raise FusionError(f"n_inner_splits {self.n_inner_splits}: must be >= 2")
        if self.base_rates not in BASE_RATES:
            raise FusionError(f"base_rates {self.base_rates!r}: expected one of {', '.join(BASE_RATES)}")

    @staticmethod
    def _check_rows(compositions: Sequence[Any], phases: Sequence[str]) -> tuple[list, np.ndarray]:
        comps = [parse_composition(c) for c in compositions]
        labels = np.asarray([str(p) for p in phases])
        if len(comps) != len(labels):
            raise FusionError(
                f"compositions ({len(comps)}) and phases ({len(labels)}): lengths differ"
            )
        unknown = sorted(set(labels) - set(PHASES))
        if unknown:
            raise FusionError(f"phases: unknown labels {unknown}; expected {PHASES}")
        if len(comps) == 0:
            raise FusionError("compositions: empty training set")
        return comps, labels

    # ----------------------------------------------------------------------------- fitting
    def out_of_fold_masses(
        self, compositions: Sequence[Composition], phases: Sequence[str], groups: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Masses each source gives to rows it was not trained on (inner grouped folds).

        Returns (masses per source name, boolean mask of rows that received a prediction).
        """
        labels = np.asarray(phases)
        n = len(compositions)
        k = min(self.n_inner_splits, len(np.unique(groups)))
        if k < 2:
            raise FusionError(
                f"groups: {len(np.unique(groups))} element set(s); need >= 2 to fit reliabilities"
            )
        oof = {s.name: np.zeros((n, 16)) for s in self.sources}
        covered = np.zeros(n, dtype=bool)
        for train, test in GroupKFold(k).split(np.zeros(n), labels, groups):
            train_comps = [compositions[i] for i in train]
            test_comps = [compositions[i] for i in test]
            for source in self.sources:
                fitted = clone(source).fit(train_comps, labels[train])
                oof[source.name][test] = fitted.masses(test_comps)
            covered[test] = True
        return oof, covered

    def _fit_rates(
        self, oof: dict[str, np.ndarray], labels: np.ndarray, base_rate: np.ndarray | None = None
    ) -> tuple[dict[str, float], float]:
        names = [s.name for s in self.sources]
        grid = np.asarray(self.rate_grid if self.rate_grid is not None else DEFAULT_RATE_GRID)
        if np.any((grid < 0) | (grid > 1)) or len(grid) == 0:
            raise FusionError(f"rate_grid {list(grid)}: rates must lie in [0, 1]")
        y = np.asarray([_PHASE_INDEX[p] for p in labels])
        masses = [oof[name] for name in names]

        def loss(rates: Sequence[float]) -> float:
            try:
                fused, _ = _fused(masses, rates, self.rule)
            except TotalConflictError:
                return np.inf
            return brier_multiclass(pignistic(fused, base_rate), y)

        # start from each source's own best rate, then improve one source at a time
        rates = []
        for m in masses:
            alone = [brier_multiclass(pignistic(discount(m, r), base_rate), y) for r in grid]
            rates.append(float(grid[int(np.argmin(alone))]))
        best = loss(rates)
        for _ in range(max(1, self.n_passes)):
            improved = False
            for i in range(len(rates)):
                for rate in grid:
                    trial = list(rates)
                    trial[i] = float(rate)
                    value = loss(trial)
                    if value < best - 1e-9:
                        best, rates, improved = value, trial, True
            if not improved:
                break
        return dict(zip(names, rates, strict=True)), float(best)

    def fit(
        self,
        compositions: Sequence[Composition | str],
        phases: Sequence[str],
        groups: Sequence[str] | None = None,
    ) -> EvidenceFusion:
        """Fit discount rates on out-of-fold masses of the training rows, then every source on all.

        ``groups`` (default: the element set of each alloy) keeps alloys of one chemical system in
        one inner fold, so the rates reflect how a source does on systems it has not seen.
        """
        self._check_config()
        comps, labels = self._check_rows(compositions, phases)
        group_array = (
            np.asarray(["-".join(c) for c in comps]) if groups is None else np.asarray(groups)
        )
        if len(group_array) != len(comps):
            raise FusionError(f"groups ({len(group_array)}) and compositions ({len(comps)}) differ")
        names = [s.name for s in self.sources]
        self.source_thresholds_ = {name: 0.5 for name in names}
        self.threshold_single_phase_ = 0.5
        self.inner_brier_ = None
        training_rate = np.array([np.sum(labels == p) + 1.0 for p in PHASES])
        training_rate /= training_rate.sum()
        self.base_rate_ = training_rate if self.base_rates == "training" else None
        self.base_rate_choice_ = "training" if self.base_rates == "training" else "uniform"
        if self.reliabilities == "fit":
            oof, covered = self.out_of_fold_masses(comps, labels, group_array)
            oof = {name: m[covered] for name, m in oof.items()}
            inner_labels = labels[covered]
            self.rates_, self.inner_brier_ = self._fit_rates(oof, inner_labels, self.base_rate_)
            if self.base_rates == "auto":  # both projections scored on the same out-of-fold masses
                self.inner_brier_by_base_rate_ = {"uniform": self.inner_brier_}
                rates, brier = self._fit_rates(oof, inner_labels, training_rate)
                self.inner_brier_by_base_rate_["training"] = brier
                if brier < self.inner_brier_:
                    self.rates_, self.inner_brier_ = rates, brier
                    self.base_rate_, self.base_rate_choice_ = training_rate, "training"
            truth = inner_labels != "MP"
            fused, _ = _fused([oof[n] for n in names], [self.rates_[n] for n in names], self.rule)
            self.threshold_single_phase_ = best_accuracy_threshold(
                single_phase_probability(fused, self.base_rate_), truth
            )
            for name in names:
                self.source_thresholds_[name] = best_accuracy_threshold(
                    single_phase_probability(oof[name], self.base_rate_), truth
                )
        elif isinstance(self.reliabilities, Mapping):
            self.rates_ = {n: round(1.0 - float(self.reliabilities[n]), 12) for n in names}
        else:
            self.rates_ = {n: 0.0 for n in names}
        self.sources_ = [clone(source).fit(comps, labels) for source in self.sources]
        return self

    # ----------------------------------------------------------------------------- predicting
    def _check_fitted(self) -> None:
        if not hasattr(self, "sources_"):
            raise FusionError("EvidenceFusion is not fitted; call fit(compositions, phases) first")

    def source_masses(self, compositions: Sequence[Composition | str]) -> dict[str, np.ndarray]:
        """Each fitted source's own (undiscounted) masses, shape (n, 16) per source name."""
        self._check_fitted()
        comps = [parse_composition(c) for c in compositions]
        return {source.name: source.masses(comps) for source in self.sources_}

    def masses(
        self, compositions: Sequence[Composition | str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(fused masses (n, 16), conflict K (n,), per-source undiscounted masses by name).

        K is the mass the unnormalised conjunctive combination of the discounted sources puts on
        the empty set: how much the sources contradict each other on that alloy.
        """
        per_source = self.source_masses(compositions)
        names = list(per_source)
        fused, conflict = _fused(
            [per_source[n] for n in names], [self.rates_[n] for n in names], self.rule
        )
        return fused, conflict, per_source

    @property
    def reliabilities_(self) -> dict[str, float]:
        return {name: 1.0 - rate for name, rate in self.rates_.items()}

    def predict_proba_single_phase(self, compositions: Sequence[Composition | str]) -> np.ndarray:
        return single_phase_probability(self.masses(compositions)[0], self.base_rate_)

    def predict_single_phase(self, compositions: Sequence[Composition | str]) -> np.ndarray:
        """Single-phase or not, at the threshold fitted on the inner folds (with equal base rates
        pignistic P(SS) is biased upwards where sources are ignorant: Ω spreads 3/4 of its mass
        over SS phases)."""
        return self.predict_proba_single_phase(compositions) >= self.threshold_single_phase_

    def predict_proba_fcc(self, compositions: Sequence[Composition | str]) -> np.ndarray:
        return fcc_probability(self.masses(compositions)[0], self.base_rate_)

    def predict_proba(self, compositions: Sequence[Composition | str]) -> np.ndarray:
        """Pignistic probabilities over PHASES, shape (n, 4), with the fitted base rates."""
        return pignistic(self.masses(compositions)[0], self.base_rate_)
