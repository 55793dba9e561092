"""The data-driven evidence source: calibrated classifiers trained on measured phase labels.

Two classifiers on matminer composition features (Magpie element statistics, Ward et al., npj
Comput. Mater. 2, 16028 (2016); stoichiometry; valence orbitals) form a hierarchy: P(single-phase
solid solution) and P(FCC | BCC | HCP given single-phase). Each is gradient boosting, a random
forest or their average, chosen per classifier on the training rows; both are calibrated on
grouped inner folds (out-of-group predictions, because in-group ones are over-confident). The
probabilities become a mass function whose ignorance grows with the distance from the nearest
training alloy: a classifier has nothing to say about chemistry it has never seen, and Dempster–
Shafer fusion lets the other sources speak there (Ha et al., arXiv:2502.14631, 2025).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline

from matflow.evidence.core import combine_conjunctive
from matflow.screening.composition import Composition, composition_key, parse_composition
from matflow.screening.phases import BCC, FCC, HCP, MP, N_FOCAL, OMEGA, PHASES, SOLID_SOLUTION
from matflow.screening.sources.base import EvidenceSource
from matflow.settings import get_settings

FEATURE_SET = "hea-composition-v1"
"""Name of the feature set; part of the disk-cache key together with the package versions."""

LATTICES: tuple[str, ...] = ("FCC", "BCC", "HCP")
_LATTICE_MASKS = (FCC, BCC, HCP)

_MEMORY: dict[str, dict[str, dict[str, float]]] = {}


@lru_cache(maxsize=1)
def _featurizers() -> list:
    """Built once per process: matminer's Magpie tables take ~0.1 s to load each time."""
    from matminer.featurizers.composition import ElementProperty, Stoichiometry, ValenceOrbital

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            ("magpie", ElementProperty.from_preset("magpie", impute_nan=False)),
            ("stoich", Stoichiometry()),
            ("valence", ValenceOrbital()),
        ]


@lru_cache(maxsize=1)
def _feature_cache_key() -> str:
    import matminer
    import pymatgen.core

    labels = [f"{name}|{label}" for name, feat in _featurizers() for label in feat.feature_labels()]
    parts = [FEATURE_SET, matminer.__version__, getattr(pymatgen.core, "__version__", ""), labels]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _featurize_one(featurizers: list, composition: Composition) -> dict[str, float]:
    from pymatgen.core import Composition as PmgComposition

    pmg = PmgComposition(composition)
    row: dict[str, float] = {}
    for name, feat in featurizers:
        labels = feat.feature_labels()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = feat.featurize(pmg)
        except Exception:  # matminer raises bare errors for elements without tabulated data
            values = [np.nan] * len(labels)
        for label, value in zip(labels, values, strict=True):
            number = float(value) if value is not None else np.nan
            row[f"{name}|{label}"] = number if np.isfinite(number) else np.nan
    return row


def composition_features(
    compositions: Sequence[Mapping[str, float]], *, use_disk_cache: bool = True
) -> pd.DataFrame:
    """Matminer composition features, one row per composition (cached in memory and on disk).

    The disk cache is the SQLite feature cache under the matflow cache dir, keyed by the
    composition key and a hash of the featurizers and package versions; values are plain floats.
    NaN marks a feature matminer has no data for (the classifier handles missing values).
    """
    from matflow.featurize.cache import FeatureCache

    key = _feature_cache_key()
    memory = _MEMORY.setdefault(key, {})
    keys = [composition_key(comp) for comp in compositions]
    missing = [k for k in dict.fromkeys(keys) if k not in memory]
    if missing and use_disk_cache:
        cache = FeatureCache(get_settings().cache_dir / "hea_composition_features.sqlite")
        memory.update(cache.get_many(key, missing))
        missing = [k for k in missing if k not in memory]
    if missing:
        featurizers = _featurizers()
        computed = {k: _featurize_one(featurizers, parse_composition(k)) for k in missing}
        memory.update(computed)
        if use_disk_cache:
            safe = {k: {c: (None if np.isnan(v) else v) for c, v in row.items()}
                    for k, row in computed.items()}
            cache.put_many(key, safe)
    frame = pd.DataFrame([memory[k] for k in keys], index=keys, dtype=float)
    return frame


def hea_descriptor_features(compositions: Sequence[Mapping[str, float]]) -> pd.DataFrame | None:
    """The classical HEA descriptors (δ, ΔH_mix, ΔS_mix, Ω, VEC, T_m) where that module is present."""
    try:
        from matflow.screening.descriptors import describe_many
    except ImportError:
        return None
    try:
        described = describe_many([dict(c) for c in compositions])
    except (ValueError, KeyError):
        return None
    frame = pd.DataFrame(described)
    frame = frame.drop(columns=["missing_pairs"], errors="ignore")
    frame = frame.apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    frame.columns = [f"hea|{c}" for c in frame.columns]
    frame.index = [composition_key(c) for c in compositions]
    return frame


def feature_matrix(
    compositions: Sequence[Mapping[str, float]], *, use_descriptors: bool = True
) -> pd.DataFrame:
    features = composition_features(compositions)
    if use_descriptors:
        extra = hea_descriptor_features(compositions)
        if extra is not None and len(extra) == len(features):
            features = pd.concat([features, extra.set_axis(features.index)], axis=1)
    return features


class _ConstantClassifier:
    """Stand-in when a fold has one class only: predicts the training frequencies."""

    def __init__(self, classes: np.ndarray, prior: np.ndarray):
        self.classes_ = classes
        self.prior_ = prior

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.prior_, (len(X), 1))


def _group_splits(groups: np.ndarray, y: np.ndarray, n_splits: int) -> tuple[list | None, bool]:
    """Grouped folds whose training part holds every class; and whether they still partition
    the rows (needed to calibrate one model on out-of-fold predictions)."""
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        return None, False
    splits = []
    for train, test in GroupKFold(k).split(np.zeros(len(y)), y, groups):
        if len(np.unique(y[train])) == len(np.unique(y)):
            splits.append((train, test))
    return (splits or None), len(splits) == k


CALIBRATIONS: tuple[str, ...] = ("auto", "sigmoid", "isotonic")
MODELS: tuple[str, ...] = ("auto", "hgb", "rf", "both")
"""Model families of the data source: gradient boosting, random forest, the average of the two
calibrated probabilities, or "auto" (the one of the three with the lower inner held-out Brier)."""

_PROBA_EPS = 1e-3
"""Vote shares of a forest are clipped to [eps, 1 - eps] before their log-odds are taken."""


def _class_scores(model, X: np.ndarray) -> np.ndarray:
    """Raw per-class scores (log-odds), shape (n, n_classes); binary models give (n, 1).

    Models without ``decision_function`` (random forests) give the log-odds of their clipped
    predicted probabilities, so sigmoid calibration sees the same kind of score from both families.
    """
    if hasattr(model, "decision_function"):
        scores = np.asarray(model.decision_function(X), dtype=float)
        return scores[:, None] if scores.ndim == 1 else scores
    proba = np.clip(np.asarray(model.predict_proba(X), dtype=float), _PROBA_EPS, 1.0 - _PROBA_EPS)
    logits = np.log(proba / (1.0 - proba))
    return logits[:, [1]] if logits.shape[1] == 2 else logits


def _fold_brier(p: np.ndarray, onehot: np.ndarray, splits: list) -> float:
    """Mean over held folds of the multi-class Brier score (sum over classes, mean over rows)."""
    return float(np.mean([np.mean(np.sum((p[held] - onehot[held]) ** 2, axis=1))
                          for _, held in splits]))


def _fit_calibrators(method: str, scores: np.ndarray, y_onehot: np.ndarray) -> list:
    """One 1-D calibrator per score column, one-vs-rest (a binary model has one column)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    out = []
    for j in range(scores.shape[1]):
        target = y_onehot[:, j if y_onehot.shape[1] > 1 and scores.shape[1] > 1 else -1]
        if len(np.unique(target)) < 2:
            out.append(float(target.mean()))
        elif method == "sigmoid":  # Platt scaling of the log-odds
            out.append(LogisticRegression(C=1e6).fit(scores[:, [j]], target))
        else:
            out.append(IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                       .fit(scores[:, j], target))
    return out


def _apply_calibrators(calibrators: list, scores: np.ndarray) -> np.ndarray:
    """Calibrated class probabilities (rows sum to 1) from raw scores."""
    columns = []
    for j, cal in enumerate(calibrators):
        if isinstance(cal, float):
            columns.append(np.full(len(scores), cal))
        elif hasattr(cal, "predict_proba"):
            columns.append(cal.predict_proba(scores[:, [j]])[:, 1])
        else:
            columns.append(cal.predict(scores[:, j]))
    p = np.clip(np.column_stack(columns), 0.0, 1.0)
    if p.shape[1] == 1:
        return np.column_stack([1.0 - p[:, 0], p[:, 0]])
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])


class _OutOfGroupCalibrated:
    """A classifier fitted on all rows, calibrated on its out-of-group (held-out) scores.

    ``calibration="auto"`` picks sigmoid (Platt) or isotonic per training set: each is fitted on
    the out-of-group scores of all inner folds but one and scored (multi-class Brier) on the
    remaining one, and the lower mean wins. Isotonic steps tie many rows, which costs ranking
    quality, and it overfits small sets; sigmoid keeps the order but assumes a logistic shape.
    Neither is right everywhere, so the training rows decide.
    """

    def __init__(self, base, calibration: str, splits: list):
        self.base = base
        self.calibration = calibration
        self.splits = splits

    def fit(self, X: np.ndarray, y: np.ndarray) -> _OutOfGroupCalibrated:
        self.classes_ = np.unique(y)
        onehot = (y[:, None] == self.classes_[None, :]).astype(float)
        scores, covered = None, np.zeros(len(y), dtype=bool)
        for train, test in self.splits:
            model = clone(self.base).fit(X[train], y[train])
            fold = _class_scores(model, X[test])
            if scores is None:
                scores = np.zeros((len(y), fold.shape[1]))
            scores[test] = fold
            covered[test] = True
        self._scores, self._covered, self._onehot = scores, covered, onehot
        self._held_out: dict[str, np.ndarray] = {}
        methods = ("sigmoid", "isotonic") if self.calibration == "auto" else (self.calibration,)
        self.calibration_scores_ = {}
        if len(methods) > 1:
            for method in methods:
                self.calibration_scores_[method] = _fold_brier(
                    self.held_out_proba(method), onehot, self.splits
                )
            self.calibration_ = min(self.calibration_scores_, key=self.calibration_scores_.get)
        else:
            self.calibration_ = methods[0]
        self.calibrators_ = _fit_calibrators(self.calibration_, scores[covered], onehot[covered])
        self.model_ = clone(self.base).fit(X, y)
        return self

    def held_out_proba(self, method: str | None = None) -> np.ndarray:
        """Calibrated probabilities of the held-out rows, shape (n, n_classes): each inner fold's
        from calibrators fitted on the other folds' out-of-group scores (NaN on rows no fold
        holds out). Scores the model and its calibration on rows neither has seen; computed once
        per method (the calibration choice and the model-family choice read the same arrays)."""
        method = self.calibration_ if method is None else method
        if method not in self._held_out:
            scores, covered, onehot = self._scores, self._covered, self._onehot
            out = np.full(onehot.shape, np.nan)
            for _, held in self.splits:
                rest = np.setdiff1d(np.flatnonzero(covered), held)
                cal = _fit_calibrators(method, scores[rest], onehot[rest])
                out[held] = _apply_calibrators(cal, scores[held])
            self._held_out[method] = out
        return self._held_out[method]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _apply_calibrators(self.calibrators_, _class_scores(self.model_, X))


class _Averaged:
    """The mean of fitted classifiers' probabilities (all trained on the same labels)."""

    def __init__(self, members: list):
        self.members = members
        self.classes_ = members[0].classes_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_proba(X) for m in self.members], axis=0)


class _ModelFamilyChoice:
    """Calibrated gradient boosting and/or random forest, one of them or their average.

    ``model="auto"`` fits both families (each calibrated out of group as in
    ``_OutOfGroupCalibrated``) and keeps whichever of "hgb", "rf" and "both" has the lower
    multi-class Brier on the held-out inner folds, where each fold's probabilities come from a
    model and calibrators that never saw it. The same folds serve calibration and this choice, so
    no row outside the training set is looked at. Boosting and forests err differently on
    composition features (the forest's averaged votes are smoother, boosting fits sharper
    interactions), and which wins depends on the task and the training set.
    """

    def __init__(self, bases: Mapping[str, Any], model: str, calibration: str, splits: list):
        self.bases = bases
        self.model = model
        self.calibration = calibration
        self.splits = splits

    def fit(self, X: np.ndarray, y: np.ndarray) -> _ModelFamilyChoice:
        families = ("hgb", "rf") if self.model in ("auto", "both") else (self.model,)
        members = {name: _OutOfGroupCalibrated(self.bases[name], self.calibration, self.splits)
                   .fit(X, y) for name in families}
        first = members[families[0]]
        self.classes_ = first.classes_
        onehot = (y[:, None] == self.classes_[None, :]).astype(float)
        held = {name: m.held_out_proba() for name, m in members.items()}
        if len(families) == 2:
            held["both"] = (held["hgb"] + held["rf"]) / 2.0
        self.model_scores_ = {name: _fold_brier(p, onehot, self.splits) for name, p in held.items()}
        self.calibrations_ = {name: m.calibration_ for name, m in members.items()}
        if self.model == "auto":
            self.model_ = min(self.model_scores_, key=self.model_scores_.get)
        else:
            self.model_ = self.model
        used = families if self.model_ == "both" else (self.model_,)
        self.members_ = {name: members[name] for name in used}  # the unused family is dropped
        self._predictor = _Averaged(list(self.members_.values()))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._predictor.predict_proba(X)


class DataSource(EvidenceSource):
    """Evidence learned from measured labels, with ignorance that grows away from the data.

    Parameters: ``n_calibration_splits`` grouped inner folds whose out-of-group predictions
    calibrate the classifiers; ``calibration`` "sigmoid", "isotonic" or "auto" (chosen per
    training set by grouped inner CV, see ``_OutOfGroupCalibrated``); ``model`` "hgb"
    (HistGradientBoosting), "rf" (random forest), "both" (mean of the two calibrated
    probabilities) or "auto" (per classifier, the one of the three with the lower held-out Brier
    on the same inner folds, see ``_ModelFamilyChoice``); ``max_iter``/``learning_rate`` of the
    gradient boosting; ``rf_n_estimators``/``rf_min_samples_leaf`` of the forest (leaves of 2
    alloys smooth the vote shares a little; fixed a priori, not tuned); ``distance_scale`` the
    composition distance (half the L1 distance of mole fractions, 0..1) at which confidence falls
    by 1/e; ``max_confidence`` the largest share of mass committed to specific phases (the rest
    stays on Ω).

    After ``fit``, ``model_choice_`` records per classifier ("single_phase", "lattice") the family
    used, the inner held-out Brier of each candidate and each family's calibration method.
    """

    name: ClassVar[str] = "data"

    def __init__(
        self,
        n_calibration_splits: int = 3,
        max_iter: int = 150,
        learning_rate: float = 0.1,
        distance_scale: float = 1.0,
        max_confidence: float = 0.95,
        use_descriptors: bool = True,
        calibration: str = "auto",
        model: str = "auto",
        rf_n_estimators: int = 300,
        rf_min_samples_leaf: int = 2,
        random_state: int = 0,
    ):
        self.n_calibration_splits = n_calibration_splits
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.distance_scale = distance_scale
        self.max_confidence = max_confidence
        self.use_descriptors = use_descriptors
        self.calibration = calibration
        self.model = model
        self.rf_n_estimators = rf_n_estimators
        self.rf_min_samples_leaf = rf_min_samples_leaf
        self.random_state = random_state

    def _check_params(self) -> None:
        if not 0 < self.max_confidence <= 1:
            raise ValueError(f"max_confidence {self.max_confidence}: must be in (0, 1]")
        if not self.distance_scale > 0:
            raise ValueError(f"distance_scale {self.distance_scale}: must be > 0")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration {self.calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r}: expected one of {', '.join(MODELS)}")
        for name in ("rf_n_estimators", "rf_min_samples_leaf"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} {value!r}: must be an integer >= 1")

    def _bases(self) -> dict[str, Any]:
        """The unfitted estimators of each family (the forest imputes medians, as it needs)."""
        return {
            "hgb": HistGradientBoostingClassifier(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                random_state=self.random_state,
                class_weight=None,
            ),
            "rf": make_pipeline(
                SimpleImputer(strategy="median", keep_empty_features=True),
                RandomForestClassifier(
                    n_estimators=self.rf_n_estimators,
                    min_samples_leaf=self.rf_min_samples_leaf,
                    n_jobs=1,
                    random_state=self.random_state,
                ),
            ),
        }

    def _classifier(self, y: np.ndarray, X: np.ndarray, groups: np.ndarray) -> tuple[Any, dict]:
        """The fitted (calibrated) classifier and a JSON-able record of the model choice."""
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return _ConstantClassifier(classes, np.ones(1)), {"model": "constant",
                                                              "reason": "one class in training"}
        splits, partition = _group_splits(groups, y, self.n_calibration_splits)
        if splits is None or len(y) < 20:
            return _ConstantClassifier(classes, counts / counts.sum()), {
                "model": "constant", "reason": "too few rows or groups for inner folds"}
        bases = self._bases()
        if partition:
            # one model on all rows, calibrated on its out-of-group scores (an ensemble of fold
            # models each sees a third less data and ranks worse)
            model = _ModelFamilyChoice(bases, self.model, self.calibration, splits)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y)
            return model, {"model": model.model_,
                           "inner_brier": {k: round(v, 6) for k, v in model.model_scores_.items()},
                           "calibration": dict(model.calibrations_)}
        # folds that miss a class do not partition the rows: average the fold models; without
        # held-out rows for every class there is no fair choice, so "auto" keeps boosting
        method = "sigmoid" if self.calibration == "auto" else self.calibration
        families = {"auto": ("hgb",), "both": ("hgb", "rf")}.get(self.model, (self.model,))
        members = [CalibratedClassifierCV(bases[f], method=method, cv=splits, ensemble=True)
                   for f in families]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for member in members:
                member.fit(X, y)
        return _Averaged(members), {
            "model": "both" if len(families) == 2 else families[0], "calibration": method,
            "reason": "inner folds miss a class: fold models averaged, no held-out choice"}

    def fit(self, compositions: Sequence[Composition], phases: Sequence[str]) -> DataSource:
        self._check_params()
        comps = [parse_composition(c) for c in compositions]
        labels = np.asarray([str(p) for p in phases])
        if len(comps) != len(labels):
            raise ValueError(
                f"compositions ({len(comps)}) and phases ({len(labels)}): lengths differ"
            )
        unknown = sorted(set(labels) - set(PHASES))
        if unknown:
            raise ValueError(f"phases: unknown labels {unknown}, expected {PHASES}")
        features = feature_matrix(comps, use_descriptors=self.use_descriptors)
        self.feature_names_ = list(features.columns)
        X = features.to_numpy(dtype=float)
        groups = np.asarray(["-".join(c) for c in comps])
        single = labels != "MP"
        self.single_phase_model_, single_record = self._classifier(single.astype(int), X, groups)
        self.lattice_model_, lattice_record = self._classifier(labels[single], X[single],
                                                               groups[single])
        self.model_choice_ = {"single_phase": single_record, "lattice": lattice_record}
        self.vocabulary_ = sorted({el for c in comps for el in c})
        self._train_fractions_ = self._fractions(comps)
        self.neighbours_ = NearestNeighbors(n_neighbors=1, metric="manhattan").fit(
            self._train_fractions_
        )
        self.train_keys_ = [composition_key(c) for c in comps]
        self.train_phases_ = labels
        return self

    def _fractions(self, comps: Sequence[Composition]) -> np.ndarray:
        index = {el: i for i, el in enumerate(self.vocabulary_)}
        out = np.zeros((len(comps), len(index)))
        for row, comp in enumerate(comps):
            for el, x in comp.items():
                if el in index:
                    out[row, index[el]] = x
        return out

    def _probabilities(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model = self.single_phase_model_
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        p_single = proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))
        if isinstance(model, _ConstantClassifier):
            p_single = np.full(len(X), 1.0 if classes == [1] else 0.0)
            if len(model.prior_) == 2:
                p_single = np.full(len(X), model.prior_[1])
        lattice = np.zeros((len(X), len(LATTICES)))
        lat_model = self.lattice_model_
        lat_proba = lat_model.predict_proba(X)
        for j, cls in enumerate(lat_model.classes_):
            lattice[:, LATTICES.index(str(cls))] = lat_proba[:, j]
        lattice /= np.clip(lattice.sum(axis=1, keepdims=True), 1e-12, None)
        return np.clip(p_single, 0.0, 1.0), lattice

    def distance_to_training(self, compositions: Sequence[Composition]) -> tuple[np.ndarray, np.ndarray]:
        """Half-L1 composition distance (0..1) to the nearest training alloy, and that alloy's index."""
        comps = [parse_composition(c) for c in compositions]
        fractions = self._fractions(comps)
        outside = 1.0 - fractions.sum(axis=1)  # mole fraction of elements never seen in training
        dist, idx = self.neighbours_.kneighbors(fractions)
        return np.clip((dist[:, 0] + outside) / 2.0, 0.0, 1.0), idx[:, 0]

    def confidence(self, distance: np.ndarray) -> np.ndarray:
        return self.max_confidence * np.exp(-np.asarray(distance) / self.distance_scale)

    def masses(self, compositions: Sequence[Composition]) -> np.ndarray:
        comps = [parse_composition(c) for c in compositions]
        n = len(comps)
        out = np.zeros((n, N_FOCAL))
        if n == 0:
            return out
        X = feature_matrix(comps, use_descriptors=self.use_descriptors)
        X = X.reindex(columns=self.feature_names_).to_numpy(dtype=float)
        p_single, lattice = self._probabilities(X)
        distance, _ = self.distance_to_training(comps)
        conf = self.confidence(distance)
        return self._hierarchical_masses(p_single, lattice, conf)

    @staticmethod
    def _hierarchical_masses(p_single: np.ndarray, lattice: np.ndarray, conf: np.ndarray) -> np.ndarray:
        """Masses of the two classifiers as two pieces of evidence, combined conjunctively.

        The single-phase model gives m1(SS) = c·p, m1(MP) = c·(1 − p), m1(Ω) = 1 − c. The lattice
        model was trained on single-phase alloys only, so its P(lattice | SS) says nothing about
        multi-phase: its mass goes to {lattice, MP} (the conditional embedding of Smets' generalised
        Bayesian theorem), m2({L, MP}) = c·P(L | SS), m2(Ω) = 1 − c. Their conjunction never
        conflicts and keeps P(FCC | FCC or BCC) at the lattice model's odds where the single-phase
        model is unsure, instead of pulling it to 1/2 as mass on lattices scaled by c·p would.
        """
        n = len(p_single)
        c = np.asarray(conf, dtype=float)
        m1 = np.zeros((n, N_FOCAL))
        m1[:, SOLID_SOLUTION] = c * p_single
        m1[:, MP] = c * (1.0 - p_single)
        m1[:, OMEGA] = 1.0 - c
        m2 = np.zeros((n, N_FOCAL))
        for j, mask in enumerate(_LATTICE_MASKS):
            m2[:, mask | MP] = c * lattice[:, j]
        m2[:, OMEGA] += 1.0 - c
        return combine_conjunctive(m1, m2)

    def explain(self, composition: Composition) -> dict[str, Any]:
        comp = parse_composition(composition)
        X = feature_matrix([comp], use_descriptors=self.use_descriptors)
        X = X.reindex(columns=self.feature_names_).to_numpy(dtype=float)
        p_single, lattice = self._probabilities(X)
        distance, idx = self.distance_to_training([comp])
        return {
            "p_single_phase": round(float(p_single[0]), 4),
            **{f"p_{lat}_given_ss": round(float(lattice[0, j]), 4) for j, lat in enumerate(LATTICES)},
            "confidence": round(float(self.confidence(distance)[0]), 4),
            "distance_to_nearest": round(float(distance[0]), 4),
            "nearest_training_alloy": self.train_keys_[int(idx[0])],
            "nearest_training_phase": str(self.train_phases_[int(idx[0])]),
            "n_training": len(self.train_keys_),
            "model_single_phase": self.model_choice_["single_phase"]["model"],
            "model_lattice": self.model_choice_["lattice"]["model"],
        }
