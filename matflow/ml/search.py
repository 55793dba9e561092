"""Nested model selection for ``MODNetRegressor``: a small evolutionary search scored by inner CV.

``MODNetSearch`` is a scikit-learn regressor. ``fit(X, y)`` searches on the rows it is given and on
nothing else, then refits the chosen configuration on all of them; inside an outer CV fold it therefore
sees only that fold's training rows, which is Matbench's rule for hyper-parameters (nested CV). A space
may also name the calibration variant, which is then chosen inside the fold too.

The default space leaves out what the inner fits cannot measure: the number of members and the
calibration variant. Inner fits train at most ``inner_max_estimators`` members, so a refit with 10
members is scored as one with 3; and cross calibration with 3 members trains each on 2/3 of the rows
where the refit's 10 train each on 9/10, so the inner loop ranks split calibration above cross for a
reason the refit does not share. Both come from the base configuration instead (more members average
more networks; cross calibration lets every row train and calibrate).

The search follows the idea of MODNet's genetic search (De Breuck et al., npj Comput. Mater. 7, 83, 2021):

1. the population starts with the base configuration (``base_params``) and random draws from ``space``;
2. each later candidate is a uniform crossover of two parents drawn from the better half of the
   candidates scored so far, each of its genes then mutated with probability ``mutation_rate`` to a
   random value of the space;
3. it stops after ``budget`` distinct inner evaluations.

Score of a candidate: ``inner_folds``-fold CV (``KFold`` shuffled with ``random_state``) on the rows
given to ``fit``; each inner fit is a ``MODNetRegressor`` (which selects features, early-stops and
calibrates on its own inner training rows); the inner validation rows give the pooled MAE and the pooled
coverage of the conformal intervals. Choice: among candidates whose inner coverage lies in
``coverage_band`` (when any does), the lowest inner MAE; otherwise the lowest inner MAE.

Inner fits are cheaper than the refit, by this rule (also written to ``search_info_["inner_rule"]``):
``n_estimators`` becomes ``min(n_estimators, inner_max_estimators)``; ``epochs`` and ``patience`` are
multiplied by ``inner_epoch_fraction`` (at least 10 and 5; default 1: shortened training ranked
candidates by how fast they learn, not how well, and chose a configuration 15 cm⁻¹ worse on
matbench_phonons fold 0); the out-of-domain widening is off in inner fits. Candidates that differ only in members above
the cap have identical inner fits and share one evaluation (it counts once against the budget); among
equal scores the candidate with more members is kept, since more members average more networks and,
with cross calibration, train each of them on more rows.

Each inner evaluation is cached as one JSON file under ``<cache_dir>/search/`` keyed by a hash of the
data (X, y), the inner parameters, the inner fold seed and every other setting that changes the score,
so a killed search rerun with the same arguments replays its (deterministic) candidate sequence and
fits only the candidates that had not finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from matflow.ml.estimator import MODNetRegressor, Prediction, jsonable
from matflow.ml.network import ACTIVATIONS
from matflow.ml.uncertainty import empirical_coverage
from matflow.outputs import atomic_write_text

__all__ = ["MODNetSearch", "DEFAULT_SPACE", "DEFAULT_BUDGET", "select_best", "CACHE_FORMAT"]

CACHE_FORMAT = 2

DEFAULT_SPACE: dict[str, tuple] = {
    "n_features": (64, 128, 256, 384),
    "widths": (((128,), (64,), (16,)), ((256,), (128,), (32,)), ((512,), (256,), (64,))),
    "lr": (3e-4, 1e-3, 3e-3),
    "loss": ("mae", "mse"),
    "batch_size": (16, 32, 64),
    "activation": ("elu", "relu", "silu"),
}

DEFAULT_BUDGET = 6
"""Distinct inner evaluations of a search. On ~1,000 rows x ~400 features with one torch thread an evaluation
(3 inner folds x 3 members, half epochs/patience) takes about a minute on 2 cores for the base configuration
and from 0.4x to 3x that across ``DEFAULT_SPACE`` (wide layers, batch 16 and lr 3e-4 are the slow corner), so
a search takes about 6 minutes plus the refit of the chosen settings."""


def _canon(params: Mapping) -> str:
    return json.dumps({k: jsonable(v) for k, v in sorted(params.items())}, sort_keys=True)


def _as_param(name: str, value):
    """A gene value as ``MODNetRegressor`` expects it (widths as tuples of tuples of int)."""
    if name == "widths":
        return tuple(tuple(int(w) for w in level) for level in value)
    return jsonable(value)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            h.update(json.dumps([str(c) for c in part.columns]).encode())
            h.update(np.ascontiguousarray(part.to_numpy(dtype=np.float64)).tobytes())
        elif isinstance(part, np.ndarray):
            h.update(str(part.shape).encode())
            h.update(np.ascontiguousarray(part, dtype=np.float64).tobytes())
        else:
            h.update(json.dumps(jsonable(part), sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def select_best(records: list[dict], band: tuple[float, float]) -> int:
    """Index of the chosen record: lowest inner MAE among those whose coverage is in ``band`` (when
    any is), else the lowest inner MAE; ties go to more members, then to the earlier candidate."""
    if not records:
        raise ValueError("no candidate was evaluated")
    lo, hi = band
    in_band = [lo <= r["inner_coverage"] <= hi for r in records]
    pool = [i for i, ok in enumerate(in_band) if ok] or list(range(len(records)))
    return min(pool, key=lambda i: _rank_key(records[i], in_band[i], i))


def _rank_key(record: dict, in_band: bool, index: int) -> tuple:
    mae = record["inner_mae"]
    return (not in_band, mae if math.isfinite(mae) else math.inf,
            -int(record["params"].get("n_estimators", 0)), index)


class MODNetSearch(RegressorMixin, BaseEstimator):
    """Evolutionary hyper-parameter search over ``MODNetRegressor`` settings, scored by inner CV on the
    rows given to ``fit``, then a refit of the chosen settings on all of them (see module docstring).

    Parameters:
      space: gene -> tuple of choices (``MODNetRegressor`` parameter names); None = ``DEFAULT_SPACE``.
      base_params: ``MODNetRegressor`` parameters of every candidate before its genes are applied; also
        the first candidate of the population (its gene values may lie outside the space).
      budget: distinct inner evaluations (None = ``DEFAULT_BUDGET``).
      population: size of the initial population (None = max(2, budget // 2)).
      mutation_rate: per-gene mutation probability of a child.
      inner_folds, inner_max_estimators, inner_epoch_fraction: the inner CV and its cheaper fits.
      coverage_band: inner coverage range that qualifies a candidate (for nominal 90 % intervals).
      cross_nmi, targets, n_threads: passed to every ``MODNetRegressor``.
      cache: read and write the per-candidate cache; cache_dir: its root (None = settings' cache_dir).
      random_state: seeds the inner folds, the fits and the evolutionary choices.
      log: callable taking one line per evaluated candidate (None = silent).
    """

    def __init__(self, space: dict | None = None, base_params: dict | None = None, budget: int | None = None,
                 population: int | None = None, mutation_rate: float = 0.25, inner_folds: int = 3,
                 inner_max_estimators: int = 3, inner_epoch_fraction: float = 1.0,
                 coverage_band: tuple = (0.85, 0.95), cross_nmi: pd.DataFrame | None = None,
                 targets: tuple | None = None, n_threads: int | None = None, cache: bool = True,
                 cache_dir: str | None = None, random_state: int = 0,
                 log: Callable[[str], object] | None = None):
        self.space = space
        self.base_params = base_params
        self.budget = budget
        self.population = population
        self.mutation_rate = mutation_rate
        self.inner_folds = inner_folds
        self.inner_max_estimators = inner_max_estimators
        self.inner_epoch_fraction = inner_epoch_fraction
        self.coverage_band = coverage_band
        self.cross_nmi = cross_nmi
        self.targets = targets
        self.n_threads = n_threads
        self.cache = cache
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.log = log

    # ------------------------------------------------------------------ settings
    def _space(self) -> dict[str, tuple]:
        space = DEFAULT_SPACE if self.space is None else self.space
        allowed = set(MODNetRegressor().get_params())
        fixed = {"cross_nmi", "targets", "random_state", "n_threads"}
        unknown = [g for g in space if g not in allowed or g in fixed]
        if unknown:
            raise ValueError(f"search space names {unknown}, which are not searchable MODNetRegressor parameters")
        empty = [g for g, choices in space.items() if len(choices) == 0]
        if empty:
            raise ValueError(f"search space gene(s) {empty} have no choices")
        bad = [a for a in space.get("activation", ()) if a not in ACTIVATIONS]
        if bad:
            raise ValueError(f"unknown activation(s) {bad}; choose from {', '.join(ACTIVATIONS)}")
        return {g: tuple(_as_param(g, c) for c in choices) for g, choices in space.items()}

    def _base(self) -> dict:
        base = {k: _as_param(k, v) for k, v in (self.base_params or {}).items()}
        for key in ("cross_nmi", "targets", "random_state", "n_threads"):
            base.pop(key, None)
        return base

    def _full_params(self, genes: dict) -> dict:
        defaults = MODNetRegressor().get_params()
        return {k: v for k, v in {**self._base(), **genes}.items() if k in defaults}

    def _inner_params(self, genes: dict) -> dict:
        p = {**MODNetRegressor().get_params(), **self._full_params(genes)}
        for key in ("cross_nmi", "targets", "random_state", "n_threads"):
            p.pop(key)
        p["n_estimators"] = min(int(p["n_estimators"]), int(self.inner_max_estimators))
        p["epochs"] = max(10, int(round(p["epochs"] * self.inner_epoch_fraction)))
        p["patience"] = max(5, int(round(p["patience"] * self.inner_epoch_fraction)))
        if "widening" in p:  # out-of-domain widening leaves in-domain MAE and coverage alone; refit keeps it
            p["widening"] = False
        return p

    def _budget(self) -> int:
        budget = DEFAULT_BUDGET if self.budget is None else int(self.budget)
        if budget < 1:
            raise ValueError(f"budget must be at least 1, got {budget}")
        return budget

    def _cache_root(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        from matflow.settings import get_settings

        return get_settings().cache_dir / "search"

    def inner_rule(self) -> str:
        return (f"inner {self.inner_folds}-fold CV (KFold shuffled, seed {self.random_state}) on the rows given "
                f"to fit; inner fits use min(n_estimators, {self.inner_max_estimators}) members and "
                f"epochs/patience x {self.inner_epoch_fraction:g} (at least 10/5); refit uses the full settings")

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        t_start = time.perf_counter()
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=float),
                                                                  columns=[f"x{i}" for i in range(np.shape(X)[1])])
        Y = np.asarray(y, dtype=np.float64)
        space = self._space()
        budget = self._budget()
        n_folds = int(self.inner_folds)
        if n_folds < 2:
            raise ValueError(f"inner_folds must be at least 2, got {n_folds}")
        if len(frame) < 2 * n_folds:
            raise ValueError(f"MODNetSearch needs at least {2 * n_folds} rows for {n_folds} inner folds "
                             f"(got {len(frame)})")
        folds = list(KFold(n_folds, shuffle=True, random_state=int(self.random_state)).split(np.arange(len(frame))))
        context = {"format": CACHE_FORMAT, "data": _digest(frame, Y),
                   "cross_nmi": None if self.cross_nmi is None else _digest(self.cross_nmi),
                   "targets": jsonable(self.targets), "inner_folds": n_folds, "seed": int(self.random_state)}
        rng = np.random.default_rng(int(self.random_state))
        records: list[dict] = []
        scores: dict[str, dict] = {}
        seen: set[str] = set()

        def consider(genes: dict) -> None:
            canon = _canon(genes)
            if canon in seen:
                return
            seen.add(canon)
            inner = self._inner_params(genes)
            key = _digest(context, _canon(inner))
            fresh = key not in scores
            if fresh:
                scores[key] = self._score(frame, Y, folds, inner, key)
            score = scores[key]
            record = {"params": {g: genes[g] for g in genes}, "inner_key": key, **{
                k: score[k] for k in ("inner_mae", "inner_coverage", "inner_fold_mae", "wall_s")},
                "from_cache": score["from_cache"], "shared": not fresh}
            records.append(record)
            if self.log is not None:
                shown = ", ".join(f"{g}={jsonable(v)}" for g, v in genes.items())
                how = ("same inner fits as an earlier candidate" if not fresh else
                       "cached" if score["from_cache"] else f"{score['wall_s']:.0f}s")
                self.log(f"search {len(scores)}/{budget}: {shown} -> inner MAE {score['inner_mae']:.4g}, "
                         f"coverage {score['inner_coverage']:.3f} ({how})")

        base = self._full_params({})
        first = {g: base.get(g, MODNetRegressor().get_params()[g]) for g in space}
        n_init = max(2, budget // 2) if self.population is None else max(1, int(self.population))
        initial = [first]
        for _ in range(50 * n_init):
            if len(initial) >= n_init:
                break
            cand = {g: choices[int(rng.integers(len(choices)))] for g, choices in space.items()}
            if _canon(cand) not in {_canon(c) for c in initial}:
                initial.append(cand)
        for cand in initial:
            if len(scores) >= budget:
                break
            consider(cand)
        attempts = 0
        while len(scores) < budget and attempts < 50 * budget:
            attempts += 1
            consider(self._child(records, space, rng))

        lo, hi = (float(v) for v in self.coverage_band)
        best = select_best(records, (lo, hi))
        self.best_index_ = best
        self.best_params_ = dict(records[best]["params"])
        self.best_score_ = float(records[best]["inner_mae"])
        self.cv_results_ = {
            "params": [r["params"] for r in records],
            "inner_mae": [r["inner_mae"] for r in records],
            "inner_coverage": [r["inner_coverage"] for r in records],
            "inner_fold_mae": [r["inner_fold_mae"] for r in records],
            "in_band": [bool(lo <= r["inner_coverage"] <= hi) for r in records],
            "from_cache": [r["from_cache"] for r in records],
            "shared_evaluation": [r["shared"] for r in records],
            "wall_s": [r["wall_s"] for r in records],
        }
        t_search = time.perf_counter() - t_start
        t0 = time.perf_counter()
        self.best_estimator_ = MODNetRegressor(**self._full_params(self.best_params_), cross_nmi=self.cross_nmi,
                                               targets=self.targets, random_state=self.random_state,
                                               n_threads=self.n_threads).fit(frame, Y)
        self.search_info_ = {
            "budget": budget, "n_evaluations": len(scores), "n_candidates": len(records),
            "n_from_cache": sum(1 for s in scores.values() if s["from_cache"]),
            "n_rows": len(frame), "inner_rule": self.inner_rule(), "inner_folds": n_folds,
            "coverage_band": [lo, hi], "space": {g: [jsonable(c) for c in ch] for g, ch in space.items()},
            "search_wall_s": round(t_search, 2), "refit_wall_s": round(time.perf_counter() - t0, 2),
            "any_in_band": any(self.cv_results_["in_band"]),
        }
        self.n_features_in_ = self.best_estimator_.n_features_in_
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_
        return self

    def _child(self, records: list[dict], space: dict, rng: np.random.Generator) -> dict:
        lo, hi = (float(v) for v in self.coverage_band)
        order = sorted(range(len(records)), key=lambda i: _rank_key(
            records[i], lo <= records[i]["inner_coverage"] <= hi, i))
        elite = order[:max(2, math.ceil(len(order) / 2))]
        if len(elite) >= 2:
            a, b = (records[i]["params"] for i in rng.choice(elite, size=2, replace=False))
        else:
            a = b = records[elite[0]]["params"]
        child = {}
        for g, choices in space.items():
            child[g] = a[g] if rng.random() < 0.5 else b[g]
            if rng.random() < self.mutation_rate:
                child[g] = choices[int(rng.integers(len(choices)))]
        return child

    def _score(self, frame: pd.DataFrame, Y: np.ndarray, folds: list, inner: dict, key: str) -> dict:
        path = self._cache_root() / f"{key}.json"
        if self.cache and path.is_file():
            try:
                cached = json.loads(path.read_text())
                if cached.get("key") == key:
                    return {**cached, "from_cache": True}
            except (OSError, ValueError):
                pass  # unreadable entry: fitted again and rewritten below
        t0 = time.perf_counter()
        ys, preds, lows, highs, fold_mae = [], [], [], [], []
        for tr, va in folds:
            est = MODNetRegressor(**inner, cross_nmi=self.cross_nmi, targets=self.targets,
                                  random_state=self.random_state, n_threads=self.n_threads)
            est.fit(frame.iloc[tr], Y[tr])
            pred = est.predict_dist(frame.iloc[va])
            ys.append(Y[va])
            preds.append(pred.mean)
            lows.append(pred.lower)
            highs.append(pred.upper)
            fold_mae.append(float(np.mean(np.abs(Y[va] - pred.mean))))
        y_all, p_all = np.concatenate(ys), np.concatenate(preds)
        mae = float(np.mean(np.abs(y_all - p_all)))
        result = {"key": key, "inner_params": {k: jsonable(v) for k, v in inner.items()},
                  "inner_mae": mae if math.isfinite(mae) else math.inf,
                  "inner_coverage": empirical_coverage(y_all, np.concatenate(lows), np.concatenate(highs)),
                  "inner_fold_mae": fold_mae, "n_rows": len(frame),
                  "wall_s": round(time.perf_counter() - t0, 2)}
        if self.cache:
            atomic_write_text(path, json.dumps(result, indent=1) + "\n")
        return {**result, "from_cache": False}

    # ------------------------------------------------------------------ predict
    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X)

    def predict_dist(self, X) -> Prediction:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_dist(X)
