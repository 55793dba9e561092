"""The train pipeline, defined once: featurize -> clean -> select -> ensemble -> calibrate -> register.

``run_training`` is the one orchestration; ``matflow train``, the Prefect flow ``flows/train.py`` (which
runs each step as a task through ``run_training(step=...)``) and ``benchmarks/modnet.py`` all call it,
so the guards (an existing model version is refused before any featurization) hold for all of them.

What sees which rows:
- featurization and the feature-feature cross-NMI use features only (no labels); the cross-NMI is
  computed once on all rows' features, as MODNet does, and shared by every fit;
- every label-using step (imputation medians, NMI relevance and selection, target scaling, early
  stopping, conformal calibration) happens inside ``MODNetRegressor.fit`` on the rows it is given;
- with ``search=True`` the hyper-parameters and the calibration variant are chosen by ``MODNetSearch``,
  itself an estimator fitted on the rows it is given (nested CV inside ``cross_validate``).
Featurization is cached by the feature cache, the cross-NMI by ``cached_cross_nmi`` and search
candidates by ``matflow.ml.search``, so a rerun only pays for the fits.
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score

from matflow.ml.estimator import MODNetRegressor, jsonable
from matflow.ml.search import MODNetSearch
from matflow.ml.uncertainty import empirical_coverage

__all__ = ["TargetInfo", "DatasetSpec", "DATASET_SPECS", "CONFIGS", "FeaturizedData", "featurize_dataset",
           "dataset_cross_nmi", "resolve_config", "make_estimator", "default_folds", "cross_validate", "fit_full",
           "search_summary", "register", "next_version", "check_version_free", "protocol_text",
           "cv_manifest_metrics", "run_training"]

T = TypeVar("T")


@dataclass(frozen=True)
class TargetInfo:
    """One property of a dataset: its column, unit and (for a function of T) the sub-target labels."""

    name: str
    column: str
    unit: str
    sub_targets_column: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[[], pd.DataFrame]
    targets: tuple[TargetInfo, ...]
    folds: Callable[[int], list] | None
    description: str
    limits: tuple[str, ...] = ()


def _specs() -> dict[str, DatasetSpec]:
    from matflow import datasets as d

    return {
        "matbench_phonons": DatasetSpec(
            "matbench_phonons", d.load_matbench_phonons,
            (TargetInfo("last_phdos_peak", "last_phdos_peak_cm-1", "cm^-1"),),
            d.matbench_folds,
            "Frequency of the highest optical peak of the phonon DOS (DFPT, Petretto et al. 2018; "
            "Matbench v0.1 matbench_phonons).",
            ("1,265 DFPT-computed semiconductors/insulators; metals and large cells are rare in training.",),
        ),
        "alexandria_cv300": DatasetSpec(
            "alexandria_cv300", d.load_alexandria_cv300,
            (TargetInfo("cv_300K", "cv_300K_J_per_K_mol_atom", "J K^-1 mol^-1 (per atom)"),),
            d.alexandria_folds,
            "Harmonic phonon heat capacity at 300 K per mole of atoms (Alexandria PBE phonons, 1,170 binaries).",
            ("Binary compounds only; the Dulong-Petit limit 3R = 24.94 J/K/mol-atom bounds the target.",
             "Harmonic approximation: no anharmonic or electronic contributions."),
        ),
        "vib_thermo_5": DatasetSpec(
            "vib_thermo_5", d.load_vib_thermo_fixture,
            (TargetInfo("S", "S_J_per_K_mol_atom", "J K^-1 mol^-1 (per atom)", "temperatures_K"),
             TargetInfo("Cv", "Cv_J_per_K_mol_atom", "J K^-1 mol^-1 (per atom)", "temperatures_K")),
            None,
            "DFPT vibrational entropy and heat capacity on 160 temperatures (5 materials; joint-learning "
            "smoke test, not a predictive model).",
            ("Five training materials: reproduces them, does not generalise.",),
        ),
    }


DATASET_SPECS = _specs()

CONFIGS: dict[str, dict] = {
    "default": {"n_features": 256, "widths": ((256,), (128,), (32,)), "epochs": 600, "patience": 60,
                "batch_size": 32, "lr": 1e-3, "loss": "mae", "n_estimators": 5, "calibration": "cross"},
    "ens10": {"n_features": 256, "widths": ((256,), (128,), (32,)), "epochs": 600, "patience": 60,
              "batch_size": 32, "lr": 1e-3, "loss": "mae", "n_estimators": 10, "calibration": "cross"},
    "ens10wide": {"n_features": 256, "widths": ((512,), (256,), (64,)), "epochs": 600, "patience": 60,
                  "batch_size": 32, "lr": 1e-3, "loss": "mae", "n_estimators": 10, "calibration": "cross"},
    "quick": {"n_features": 16, "widths": ((32,), (16,), (8,)), "epochs": 60, "patience": 10,
              "batch_size": 32, "n_estimators": 2},
    # a handful of materials with temperature functions: every informative feature (no MI on 5 rows)
    "joint": {"n_features": None, "widths": ((128,), (64,), (32,)), "epochs": 1500, "patience": 1500,
              "batch_size": 8, "lr": 3e-3, "n_estimators": 1, "calib_fraction": 0.0},
}
"""Named fixed settings of ``MODNetRegressor``. A fixed configuration is the same in every CV fold, so
its CV figures are nested only if it was chosen without the test folds; ``search=True`` chooses the
settings inside each fold instead (``matflow.ml.search``), starting from the named configuration."""


@dataclass
class FeaturizedData:
    """Features (ok rows only, aligned with targets) of one dataset and preset."""

    dataset: str
    preset: str
    X: pd.DataFrame
    Y: np.ndarray
    targets: list[dict]
    target_specs: tuple | None
    row_index: np.ndarray  # positions in the dataset's own order
    n_failed: int = 0
    failures: list = field(default_factory=list)


def featurize_dataset(dataset: str, preset: str = "structure", *, targets: Sequence[str] | None = None,
                      n_jobs: int = 1, limit: int | None = None, use_cache: bool = True,
                      progress: bool = False) -> FeaturizedData:
    """Featurize a bundled dataset (cached) and line its targets up with the rows that succeeded.

    ``progress``: a progress bar on stderr while structures are featurized."""
    from matflow.featurize import featurize_structures

    if dataset not in DATASET_SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SPECS)}")
    spec = DATASET_SPECS[dataset]
    chosen = list(spec.targets)
    if targets:
        by_name = {t.name: t for t in spec.targets} | {t.column: t for t in spec.targets}
        unknown = [t for t in targets if t not in by_name]
        if unknown:
            raise ValueError(f"dataset {dataset} has no target(s) {unknown}; "
                             f"choose from {', '.join(t.name for t in spec.targets)}")
        chosen = list(dict.fromkeys(by_name[t] for t in targets))
    df = spec.loader().reset_index(drop=True)
    if limit is not None:
        df = df.iloc[:limit]
    sources = [f"{dataset}[{i}]" for i in range(len(df))]
    table = featurize_structures(list(df["structure"]), preset, sources=sources, n_jobs=n_jobs,
                                 use_cache=use_cache, progress=progress)
    ok = table.table[table.table["status"] == "ok"]
    pos = np.array([int(s.rsplit("[", 1)[1].rstrip("]")) for s in ok["source"]], dtype=int)
    X = ok[table.feature_columns].astype(float).reset_index(drop=True)
    blocks, infos, specs = [], [], []
    for t in chosen:
        values = np.stack([np.atleast_1d(np.asarray(v, dtype=float)) for v in df[t.column].iloc[pos]])
        blocks.append(values)
        info = {"name": t.name, "column": t.column, "unit": t.unit}
        if t.sub_targets_column:
            info["sub_targets"] = [f"{float(x):g}K" for x in np.asarray(df[t.sub_targets_column].iloc[0])]
        infos.append(info)
        specs.append((t.name, values.shape[1], 0))  # one target group: all properties share a block
    Y = np.hstack(blocks)
    target_specs = None if len(chosen) == 1 and Y.shape[1] == 1 else tuple(specs)
    if Y.shape[1] == 1:
        Y = Y[:, 0]
    return FeaturizedData(dataset, preset, X, Y, infos, target_specs, pos,
                          n_failed=len(table.failures), failures=list(table.failures))


def dataset_cross_nmi(data: FeaturizedData, *, n_jobs: int = 1, use_cache: bool = True) -> pd.DataFrame:
    """Feature-feature NMI of the dataset's features (medians imputed, constants dropped), cached.

    Uses features only, never targets, so sharing it across CV folds leaks no labels (as MODNet does).
    """
    from matflow.ml.selection import cached_cross_nmi, cross_nmi

    X = data.X
    X = X.fillna(X.median()).dropna(axis=1, how="all")
    X = X.loc[:, (X.max() - X.min()) > 0]
    if use_cache:
        return cached_cross_nmi(X, data.dataset, data.preset, n_jobs=n_jobs)
    return cross_nmi(X, n_jobs=n_jobs)


def resolve_config(config: str | dict) -> dict:
    """A named configuration (``CONFIGS``) or an explicit dict, with widths as tuples of tuples."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r}; choose one of {', '.join(CONFIGS)}")
        params = dict(CONFIGS[config])
    else:
        params = dict(config)
    if "widths" in params:  # configs from JSON/Prefect parameters arrive as lists
        params["widths"] = tuple(tuple(int(w) for w in level) for level in params["widths"])
    return params


def make_estimator(config: str | dict = "default", *, data: FeaturizedData | None = None,
                   cross: pd.DataFrame | None = None, random_state: int = 0, search: bool = False,
                   budget: int | None = None, search_options: dict | None = None,
                   log: Callable[[str], object] | None = None,
                   **overrides) -> MODNetRegressor | MODNetSearch:
    """The pipeline's estimator: a ``MODNetRegressor`` with the configuration's settings, or with
    ``search`` a ``MODNetSearch`` that starts from them (``search_options``: its other arguments)."""
    params = resolve_config(config)
    n_threads = overrides.pop("n_threads", None)
    params.update(overrides)
    targets = params.pop("targets", None)
    if data is not None and data.target_specs is not None and targets is None:
        targets = data.target_specs
    if search:
        return MODNetSearch(base_params=params, budget=budget, cross_nmi=cross, targets=targets,
                            n_threads=n_threads, random_state=random_state, log=log, **(search_options or {}))
    return MODNetRegressor(cross_nmi=cross, random_state=random_state, targets=targets, n_threads=n_threads,
                           **params)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _regressor(est) -> MODNetRegressor:
    return est.best_estimator_ if isinstance(est, MODNetSearch) else est


def search_summary(est: MODNetSearch) -> dict:
    """What a fitted search chose and how (JSON-able): for manifests, benchmark files and logs."""
    return jsonable({"best_params": est.best_params_, "inner_mae": est.best_score_,
                      "inner_coverage": est.cv_results_["inner_coverage"][est.best_index_],
                      **est.search_info_})


def default_folds(data: FeaturizedData) -> list:
    spec = DATASET_SPECS[data.dataset]
    if spec.folds is None:
        raise ValueError(f"dataset {data.dataset} has no benchmark folds")
    return spec.folds(len(spec.loader()))


def cross_validate(data: FeaturizedData, config: str | dict = "default", *, cross: pd.DataFrame | None = None,
                   folds: list | None = None, n_threads: int | None = None, log=print,
                   max_folds: int | None = None, search: bool = False, budget: int | None = None,
                   search_options: dict | None = None, seed: int = 0) -> dict:
    """Fit/evaluate on the dataset's folds (official ones by default); returns per-fold and pooled metrics.

    In each fold a fresh estimator is fitted on the fold's training rows only, then predicts its test
    rows once; with ``search`` that estimator is a ``MODNetSearch`` (nested CV: the search never sees
    the test rows). Folds are defined over the dataset's own row order; rows whose featurization failed
    are dropped from both sides of a fold (and counted).
    """
    if folds is None:
        folds = default_folds(data)
    where = {int(p): i for i, p in enumerate(data.row_index)}
    results, pooled_y, pooled_pred, pooled_lo, pooled_hi, pooled_ok = [], [], [], [], [], []
    for k, (train_pos, test_pos) in enumerate(folds[:max_folds]):
        tr = np.array([where[p] for p in train_pos if p in where], dtype=int)
        te = np.array([where[p] for p in test_pos if p in where], dtype=int)
        est = make_estimator(config, data=data, cross=cross, random_state=seed * 1000 + k, n_threads=n_threads,
                             search=search, budget=budget, search_options=search_options,
                             log=(lambda m, k=k: log(f"[{data.dataset}] fold {k} {m}")) if search else None)
        t0 = time.perf_counter()
        est.fit(data.X.iloc[tr], data.Y[tr])
        wall = time.perf_counter() - t0
        pred = est.predict_dist(data.X.iloc[te])
        y = data.Y[te]
        reg = _regressor(est)
        fold = {"fold": k, "n_train": len(tr), "n_test": len(te),
                "mae": float(mean_absolute_error(y, pred.mean)), "r2": float(r2_score(y, pred.mean)),
                "coverage": empirical_coverage(y, pred.lower, pred.upper),
                "mean_interval_width": float(np.nanmean(pred.upper - pred.lower)),
                "no_interval_fraction": float(np.mean(~np.asarray(getattr(pred, "interval_ok", True)))),
                "in_domain_fraction": float(np.mean(pred.in_domain)),
                "mae_in_domain": float(mean_absolute_error(y[pred.in_domain], pred.mean[pred.in_domain]))
                if pred.in_domain.any() else None,
                "train_wall_s": round(wall, 2), "peak_rss_mb_process": round(_peak_rss_mb(), 1),
                "members_best_epoch": [m["best_epoch"] for m in reg.train_info_]}
        if search:
            fold["search"] = search_summary(est)
        log(f"[{data.dataset}] fold {k}: MAE {fold['mae']:.4f} R2 {fold['r2']:.4f} "
            f"coverage {fold['coverage']:.3f} ({wall:.0f}s)")
        results.append(fold)
        pooled_y.append(y)
        pooled_pred.append(pred.mean)
        pooled_lo.append(pred.lower)
        pooled_hi.append(pred.upper)
        pooled_ok.append(pred.in_domain)
    y, p = np.concatenate(pooled_y), np.concatenate(pooled_pred)
    maes = [f["mae"] for f in results]
    return {
        "folds": results,
        "mae_mean": float(np.mean(maes)), "mae_std": float(np.std(maes)),
        "r2_mean": float(np.mean([f["r2"] for f in results])),
        "mae_pooled": float(mean_absolute_error(y, p)), "r2_pooled": float(r2_score(y, p)),
        "coverage_pooled": empirical_coverage(y, np.concatenate(pooled_lo), np.concatenate(pooled_hi)),
        "in_domain_fraction": float(np.mean(np.concatenate(pooled_ok))),
        "train_wall_s_mean": float(np.mean([f["train_wall_s"] for f in results])),
        "peak_rss_mb_process": float(max(f["peak_rss_mb_process"] for f in results)),
    }


def fit_full(data: FeaturizedData, config: str | dict = "default", *, cross: pd.DataFrame | None = None,
             n_threads: int | None = None, random_state: int = 0, search: bool = False,
             budget: int | None = None, search_options: dict | None = None,
             log: Callable[[str], object] | None = None) -> MODNetRegressor | MODNetSearch:
    """Fit on every row of ``data`` (with ``search``: search on them, then refit the best)."""
    est = make_estimator(config, data=data, cross=cross, random_state=random_state, n_threads=n_threads,
                         search=search, budget=budget, search_options=search_options, log=log)
    return est.fit(data.X, data.Y)


def register(est: MODNetRegressor | MODNetSearch, data: FeaturizedData, name: str, version: str, *,
             metrics: dict | None = None, root=None, overwrite: bool = False, extra: dict | None = None) -> str:
    """Save a fitted model (a search saves its refitted best estimator, its choice in ``extra``)."""
    from matflow.ml.registry import data_hash, save_model

    spec = DATASET_SPECS[data.dataset]
    extra = dict(extra or {})
    if isinstance(est, MODNetSearch):
        extra.setdefault("search", search_summary(est))
    folder = save_model(_regressor(est), name, version, preset=data.preset, targets=data.targets,
                        dataset=data.dataset, training_hash=data_hash(data.X, data.Y), n_train=len(data.X),
                        metrics=metrics, description=spec.description, limits=spec.limits, root=root,
                        overwrite=overwrite, extra=extra or None)
    return str(folder)


_VERSION = re.compile(r"^v?(\d+)(?:\.\d+){0,2}$")


def next_version(name: str, root=None) -> str:
    """``v<N+1>`` where ``vN`` is the highest numbered version folder of ``name`` in the registry."""
    from matflow.ml.registry import _models_dir, check_plain_name

    check_plain_name(name, "model name")
    base = _models_dir(root) / name
    numbers = [int(m.group(1)) for p in (base.iterdir() if base.is_dir() else ())
               if p.is_dir() and (m := _VERSION.match(p.name))]
    return f"v{max(numbers, default=0) + 1}"


def check_version_free(name: str, version: str, root=None, overwrite: bool = False) -> Path:
    """Refuse (``ValueError``) a name/version that already holds a model unless ``overwrite``; cheap, so
    every entry point calls it before featurizing."""
    from matflow.ml.registry import _models_dir, check_plain_name

    check_plain_name(name, "model name")
    check_plain_name(version, "model version")
    if version == "latest":
        raise ValueError("model version 'latest' is reserved: it means the newest version that loads")
    target = _models_dir(root) / name / version
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"model {name} version {version} already exists at {target}; "
                         "pick a new version or pass overwrite")
    return target


def default_folds_text(dataset: str) -> str:
    """How ``DATASET_SPECS[dataset].folds`` splits the rows, for results files and model cards."""
    return {"matbench_phonons": "official Matbench v0.1 folds (KFold(5, shuffle=True, random_state=18012019))",
            "alexandria_cv300": "KFold(5, shuffle=True, random_state=0) over file order"}.get(dataset, "given folds")


def protocol_text(dataset: str, *, search: bool, config: str | dict = "default", inner_rule: str = "",
                  folds_text: str | None = None) -> str:
    """What saw which rows in ``cross_validate`` (for results files and model cards); ``folds_text``
    describes outer folds other than the dataset's default ones."""
    folds = folds_text or default_folds_text(dataset)
    common = ("the feature-feature cross-NMI (features only, no labels) is computed once on all rows' features "
              "and shared by every fit, as MODNet does; inside every fit, imputation medians, NMI relevance and "
              "feature selection, target scaling, early stopping and conformal calibration use only that fit's "
              "training rows")
    name = config if isinstance(config, str) else "custom"
    if not search:
        return (f"{folds}; fixed configuration {name!r} in every fold; per fold one MODNetRegressor fitted on "
                f"the fold's training rows, evaluated once on its test rows; {common}")
    return (f"{folds}; nested: per outer fold, MODNetSearch (starting from configuration {name!r}) sees only the "
            f"outer training rows: {inner_rule}; candidates are scored by inner MAE, preferring inner 90% "
            "coverage within [0.85, 0.95]; the chosen settings (calibration variant included) are refitted on "
            f"all outer training rows and evaluated once on the outer test rows; {common}")


def cv_manifest_metrics(cv: dict, protocol: str, config: str | dict, anchors: dict | None = None) -> dict:
    """The CV figures a model card shows (summary, per-fold MAE/coverage, protocol)."""
    metrics = {"cv": {k: v for k, v in cv.items() if k != "folds"},
               "cv_per_fold_mae": [round(f["mae"], 4) for f in cv["folds"]],
               "cv_per_fold_coverage": [round(f["coverage"], 4) for f in cv["folds"]],
               "cv_protocol": protocol, "cv_config": config if isinstance(config, str) else jsonable(config)}
    if any("search" in f for f in cv["folds"]):
        metrics["cv_per_fold_params"] = [f["search"]["best_params"] for f in cv["folds"]]
    if anchors:
        metrics["anchors"] = anchors
    return metrics


def _inline(name: str, fn: Callable[[], T]) -> T:
    return fn()


def run_training(dataset: str, *, targets: Sequence[str] | None = None, preset: str = "structure",
                 config: str | dict = "default", name: str | None = None, version: str | None = None,
                 evaluate: bool = False, search: bool = False, budget: int | None = None,
                 search_options: dict | None = None, register_model: bool = True, seed: int = 0,
                 n_jobs: int = 1, n_threads: int | None = None, limit: int | None = None,
                 folds: list | None = None, max_folds: int | None = None, metrics: dict | None = None,
                 root=None, overwrite: bool = False, progress: bool = False,
                 log: Callable[[str], Any] = print,
                 step: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict:
    """The whole pipeline in one call: featurize -> cross-NMI -> (evaluate) -> fit -> register.

    version: None = the next free ``vN`` of ``name`` (default: the dataset name). The name/version is
    checked before any featurization. evaluate: cross-validate first (``folds``/``max_folds``; nested
    when ``search``). search: choose the settings with ``MODNetSearch`` (``budget`` candidates) instead
    of using ``config`` as is; ``config`` is then the search's base. register_model: False to only
    evaluate. metrics: extra figures for the manifest. step: runs each named step (``step(name, fn)``
    returns ``fn()``): the Prefect flow passes one that makes each step a task. Returns a JSON-able dict
    (model folder, metrics, counts, failures, timings, search choice) plus the fitted ``estimator``.
    """
    step = step or _inline
    name = name or dataset
    if dataset not in DATASET_SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_SPECS)}")
    params = resolve_config(config)
    if register_model:
        version = version or next_version(name, root)
        check_version_free(name, version, root, overwrite)  # fail before hours of work
    timings: dict[str, float] = {}

    log(f"featurizing {dataset} with preset {preset!r}{f' (first {limit} rows)' if limit else ''}")
    t0 = time.perf_counter()
    data = step("featurize", lambda: featurize_dataset(dataset, preset, targets=targets, n_jobs=n_jobs,
                                                       limit=limit, progress=progress))
    timings["featurize_s"] = round(time.perf_counter() - t0, 2)
    log(f"featurized {len(data.X)} rows x {data.X.shape[1]} features ({data.n_failed} failed) "
        f"in {timings['featurize_s']:.1f}s")
    if len(data.X) == 0:
        raise ValueError(f"no row of {dataset} could be featurized with preset {preset!r}")

    cross = None
    if params.get("n_features") or search:
        t0 = time.perf_counter()
        cross = step("cross-nmi", lambda: dataset_cross_nmi(data, n_jobs=n_jobs))
        timings["cross_nmi_s"] = round(time.perf_counter() - t0, 2)
        log(f"cross-NMI of {cross.shape[0]} features over {len(data.X)} rows (features only) "
            f"in {timings['cross_nmi_s']:.1f}s")

    all_metrics = dict(metrics or {})
    cv = None
    if evaluate:
        t0 = time.perf_counter()
        cv = step("evaluate", lambda: cross_validate(data, params, cross=cross, folds=folds, n_threads=n_threads,
                                                     log=log, max_folds=max_folds, search=search, budget=budget,
                                                     search_options=search_options, seed=seed))
        timings["evaluate_s"] = round(time.perf_counter() - t0, 2)
        inner_rule = cv["folds"][0]["search"]["inner_rule"] if search else ""
        all_metrics.update(cv_manifest_metrics(cv, protocol_text(dataset, search=search, config=config,
                                                                 inner_rule=inner_rule), config))

    result: dict[str, Any] = {"dataset": dataset, "preset": preset, "name": name, "version": version, "path": None,
                              "n_train": len(data.X), "n_failed": data.n_failed, "failures": data.failures,
                              "n_raw_features": int(data.X.shape[1]), "targets": data.targets,
                              "config": jsonable(params), "seed": seed, "cv": cv, "metrics": all_metrics,
                              "timings": timings, "estimator": None, "search": None, "selected_features": []}
    if not register_model:
        return result

    what = (f"searching {budget or 'default budget'} candidates on all {len(data.X)} rows, then refitting"
            if search else f"fitting {params.get('n_estimators', 5)} member(s) on all {len(data.X)} rows")
    log(what)
    t0 = time.perf_counter()
    est = step("fit", lambda: fit_full(data, params, cross=cross, n_threads=n_threads, random_state=seed,
                                       search=search, budget=budget, search_options=search_options, log=log))
    timings["fit_s"] = round(time.perf_counter() - t0, 2)
    log(f"fitted in {timings['fit_s']:.1f}s")
    if search:
        result["search"] = search_summary(est)
        log(f"search chose {result['search']['best_params']} (inner MAE {result['search']['inner_mae']:.4g}, "
            f"coverage {result['search']['inner_coverage']:.3f})")
    path = step("register", lambda: register(est, data, name, version, metrics=all_metrics, root=root,
                                             overwrite=overwrite))
    log(f"registered {path}")
    reg = _regressor(est)
    result.update({"path": path, "estimator": est, "selected_features": list(reg.selected_names_),
                   "final_params": jsonable({k: v for k, v in reg.get_params().items() if k != "cross_nmi"})})
    return result
