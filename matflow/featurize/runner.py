"""Cached, parallel featurization of structures and compositions into a feature table.

Policy for missing and non-finite values (tested in tests/test_featurize.py):
  1. ±inf from a featurizer is stored as NaN; the table never holds inf.
  2. NaN in a feature column means "not applicable" (an alloy descriptor on a non-metal, an element
     property matminer lacks) or "this featurizer failed on this structure"; the ``errors`` column
     names each failed featurizer and why.
  3. A structure whose featurizers all fail gets status ``failed``; the others still get features.
  4. Models never see NaN: ``FeatureCleaner`` (fit on training rows only) drops columns that are all-NaN
     or constant in training and fills remaining NaN with the training median.
"""

from __future__ import annotations

import faulthandler
import math
import multiprocessing
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Element, Structure
from sklearn.base import BaseEstimator, TransformerMixin

from matflow.featurize.cache import FeatureCache
from matflow.featurize.presets import Preset, get_preset, is_all_metal
from matflow.io import (
    FailedInput,
    StructureInputError,
    ValidationLimits,
    read_structures,
    validate_structure,
)
from matflow.settings import get_settings
from matflow.structures import composition_hash, structure_hash

__all__ = ["FeatureTable", "featurize_structures", "featurize_compositions", "featurize_files",
           "FeatureCleaner", "META_COLUMNS", "default_cache", "featurize_dataset"]

META_COLUMNS = ["source", "formula", "status", "errors"]
NOT_COMPUTED = "not computed"
LARGE_CELL_SITES = 200


class LargeStructureWarning(UserWarning):
    """A structure large enough that featurizing it takes minutes."""

_WORKER_FEATURIZERS: list | None = None
_WORKER_PRESET: str | None = None
_WORKER_MARKER: Path | None = None


def default_cache() -> FeatureCache:
    return FeatureCache(get_settings().cache_dir / "features.sqlite")


def _featurize_one(obj: Structure | Composition, built: list) -> dict:
    """Run every featurizer of a preset on one object; never raises."""
    values: list[float] = []
    errors: list[str] = []
    n_failed = 0
    composition = obj.composition if isinstance(obj, Structure) else obj
    metal = is_all_metal(composition)
    for spec, feat in built:
        n = len(feat.feature_labels())
        target = obj if spec.on == "structure" else composition
        if spec.metals_only and not metal:
            values.extend([math.nan] * n)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row = feat.featurize(target)
            if len(row) != n:
                raise ValueError(f"returned {len(row)} values for {n} labels")
            values.extend(_to_float(v) for v in row)
        except Exception as exc:  # one featurizer failing must not lose the others
            n_failed += 1
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            errors.append(f"{spec.name}: {msg}")
            values.extend([math.nan] * n)
    status = "failed" if n_failed == len(built) else "ok"
    return {"values": values, "errors": "; ".join(errors), "status": status}


def _to_float(value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _worker_init(preset_name: str, marker_dir: str) -> None:
    global _WORKER_FEATURIZERS, _WORKER_PRESET, _WORKER_MARKER
    # the parent owns Ctrl-C and SIGTERM; a worker dies quietly when the parent ends it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    faulthandler.disable()  # a crash is reported once, by the parent, as a failed row
    # one BLAS thread per worker: n_jobs processes already fill the cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    os.environ["MATFLOW_FEATURIZE_WORKER"] = "1"  # torch-based featurizers take one thread too
    _WORKER_PRESET = preset_name
    _WORKER_MARKER = Path(marker_dir) / str(os.getpid())
    _WORKER_FEATURIZERS = get_preset(preset_name).build()


def _worker_run(items: list[tuple[str, dict, str]]) -> list[tuple[str, dict]]:
    """Featurize a chunk; the marker file names the item in progress, so a native crash is traced to it."""
    assert _WORKER_FEATURIZERS is not None and _WORKER_MARKER is not None
    out = []
    for key, payload, kind in items:
        _WORKER_MARKER.write_text(key)
        obj = Structure.from_dict(payload) if kind == "structure" else Composition(payload)
        out.append((key, _featurize_one(obj, _WORKER_FEATURIZERS)))
    _WORKER_MARKER.write_text("")
    return out


def _crash_row(n_features: int, preset_name: str) -> dict:
    return {"values": [math.nan] * n_features, "status": "failed",
            "errors": f"featurizer process crashed twice on this structure (preset {preset_name}); "
                      "it was isolated and the batch went on"}


@dataclass
class FeatureTable:
    """Features of a batch: one row per input (failed inputs included, with status and reason)."""

    table: pd.DataFrame
    preset: str
    failures: list[FailedInput] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0

    @property
    def n_ok(self) -> int:
        return int((self.table["status"] == "ok").sum()) if len(self.table) else 0

    @property
    def feature_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in META_COLUMNS]

    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    def features(self) -> pd.DataFrame:
        """Only successful rows and only feature columns (float64)."""
        ok = self.table[self.table["status"] == "ok"]
        return ok[self.feature_columns]

    def write(self, path: str | Path) -> Path:
        """Write the table as parquet atomically (a killed run leaves the old file or the new one)."""
        from matflow.outputs import atomic_write

        self.table.attrs = {"matflow_preset": self.preset}
        return atomic_write(path, lambda tmp: self.table.to_parquet(tmp))


def _compute(
    items: list[tuple[str, Structure | Composition]],
    preset: Preset,
    n_jobs: int,
    progress: bool,
    sink: Callable[[dict[str, dict]], None] | None = None,
    flush_rows: int = 64,
    flush_seconds: float = 30.0,
) -> dict[str, dict]:
    """Featurize unique (key, object) items in worker processes that a native crash cannot take down.

    Featurizers call native code (spglib, torch) that can crash the process on inputs validation did not
    foresee. Work therefore runs in forked workers: when a worker dies, the pool is rebuilt, the items that
    were in progress get a strike and are retried alone, and an item that crashes a worker twice becomes a
    failed row while the batch goes on. ``sink`` receives finished rows every ``flush_rows`` rows or
    ``flush_seconds``, and what is pending when the run stops for any reason (Ctrl-C, SIGTERM), so an
    interrupted hours-long run keeps what it computed.
    """
    results: dict[str, dict] = {}
    if not items:
        return results
    n_jobs = max(1, min(n_jobs if n_jobs > 0 else (os.cpu_count() or 1), len(items)))
    bar = _progress_bar(len(items), preset.name, progress)
    pending: dict[str, dict] = {}
    last_flush = time.monotonic()

    def add(key: str, row: dict) -> None:
        nonlocal last_flush
        results[key] = pending[key] = row
        bar.update(1)
        if sink is not None and (len(pending) >= flush_rows or time.monotonic() - last_flush > flush_seconds):
            sink(dict(pending))
            pending.clear()
            last_flush = time.monotonic()

    payloads = {
        key: (key, obj.as_dict() if isinstance(obj, Structure) else obj.formula,
              "structure" if isinstance(obj, Structure) else "composition")
        for key, obj in items
    }
    strikes: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="matflow-workers-") as marker_dir:
            todo = list(payloads)
            while todo:
                done_before, strikes_before = len(results), sum(strikes.values())
                fresh = [k for k in todo if not strikes.get(k)]
                suspects = [k for k in todo if strikes.get(k)]
                if fresh:
                    chunk = max(1, min(16, len(fresh) // (n_jobs * 8) or 1))
                    crashed = _run_pool([payloads[k] for k in fresh], preset.name, n_jobs, chunk,
                                        marker_dir, add)
                    for key in crashed:
                        strikes[key] = strikes.get(key, 0) + 1
                for key in suspects:  # alone in a fresh worker: a second crash convicts the item
                    if _run_pool([payloads[key]], preset.name, 1, 1, marker_dir, add):
                        add(key, _crash_row(len(preset.feature_labels()), preset.name))
                todo = [k for k in todo if k not in results]
                if todo and len(results) == done_before and sum(strikes.values()) == strikes_before:
                    raise RuntimeError(f"featurizer worker processes for preset {preset.name!r} die "
                                       "before they start; run with n_jobs=1 in a shell to see why")
    finally:
        bar.close()
        if sink is not None and pending:
            sink(pending)
    return results


def _run_pool(payloads: list[tuple[str, object, str]], preset_name: str, n_jobs: int, chunk: int,
              marker_dir: str, add: Callable[[str, dict], None]) -> set[str]:
    """Run payloads over a fresh pool; return the keys that were in progress when a worker crashed.

    Fork is used on purpose: workers inherit the imported libraries, so starting one costs milliseconds.
    """
    context = multiprocessing.get_context("fork")
    chunks = [payloads[i:i + chunk] for i in range(0, len(payloads), chunk)]
    pool = ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_worker_init,
                               initargs=(preset_name, marker_dir))
    crashed: set[str] = set()
    try:
        futures = [pool.submit(_worker_run, c) for c in chunks]
        for fut in as_completed(futures):
            try:
                rows = fut.result()
            except BrokenProcessPool:
                for marker in Path(marker_dir).iterdir():
                    key = marker.read_text().strip()
                    if key:
                        crashed.add(key)
                    marker.unlink(missing_ok=True)
                break
            for key, row in rows:
                add(key, row)
    finally:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:  # an interrupted batch must not wait for running chunks to finish
            if proc.is_alive():
                proc.terminate()
        for proc in workers:
            proc.join(timeout=5)
    return crashed


def _progress_bar(total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"featurize[{name}]", unit="struct",
                disable=not enabled or total < 20, leave=False)


def _assemble(
    keys: list[str | None],
    sources: list[str],
    formulas: list[str],
    rows: dict[str, dict],
    labels: list[str],
    failures: list[FailedInput],
) -> pd.DataFrame:
    n_feat = len(labels)
    data = np.full((len(keys) + len(failures), n_feat), np.nan)
    meta = {"source": [], "formula": [], "status": [], "errors": []}
    index: list[str | None] = []
    for i, (key, source, formula) in enumerate(zip(keys, sources, formulas, strict=True)):
        row = rows[key]
        data[i] = np.asarray(row["values"], dtype=float)
        index.append(key)
        meta["source"].append(source)
        meta["formula"].append(formula)
        meta["status"].append(row["status"])
        meta["errors"].append(row["errors"])
    for failure in failures:
        index.append(None)
        meta["source"].append(failure.source)
        meta["formula"].append("")
        meta["status"].append("failed")
        meta["errors"].append(failure.reason)
    df = pd.DataFrame(data, columns=labels)
    for name in reversed(META_COLUMNS):
        df.insert(0, name, meta[name])
    df.index = pd.Index(index, name="structure_hash", dtype=object)
    return df


def _featurize_objects(
    objs: Sequence[Structure | Composition],
    keys: list[str],
    sources: list[str],
    preset: Preset,
    n_jobs: int,
    use_cache: bool,
    cache: FeatureCache | None,
    progress: bool,
    failures: list[FailedInput],
    compute: bool = True,
) -> FeatureTable:
    labels = preset.feature_labels()
    if use_cache and cache is None:
        cache = default_cache()
    elif not use_cache:
        cache = None
    rows, n_computed, n_cached = _preset_rows(objs, keys, preset, n_jobs, cache, progress, compute)
    formulas = [o.composition.reduced_formula if isinstance(o, Structure) else o.reduced_formula for o in objs]
    table = _assemble(keys, sources, formulas, rows, labels, failures)
    failed_rows = [FailedInput(s, r) for s, st, r in
                   zip(table["source"], table["status"], table["errors"], strict=True)
                   if st in ("failed", NOT_COMPUTED)]
    return FeatureTable(table, preset.name, failures=failed_rows,
                        n_computed=n_computed, n_cached=n_cached)


def _preset_rows(
    objs: Sequence[Structure | Composition],
    keys: list[str],
    preset: Preset,
    n_jobs: int,
    cache: FeatureCache | None,
    progress: bool,
    compute: bool = True,
) -> tuple[dict[str, dict], int, int]:
    """Feature rows by key, from the cache where present; a composite preset joins its parts'.

    Cached failures are not served: a structure that failed (a crash, a featurizer bug fixed since) is
    retried on the next run. With ``compute=False`` nothing is computed and missing rows are marked
    ``not computed`` (the partial table of an interrupted run).
    """
    if preset.parts:
        parts = [_preset_rows(objs, keys, get_preset(name), n_jobs, cache, progress, compute)
                 for name in preset.parts]
        rows = {}
        for key in dict.fromkeys(keys):
            pieces = [part_rows[key] for part_rows, _, _ in parts]
            statuses = {p["status"] for p in pieces}
            rows[key] = {
                "values": [v for piece in pieces for v in piece["values"]],
                "errors": "; ".join(piece["errors"] for piece in pieces if piece["errors"]),
                "status": (NOT_COMPUTED if NOT_COMPUTED in statuses
                           else "failed" if statuses == {"failed"} else "ok"),
            }
        return rows, max(n for _, n, _ in parts), min(n for _, _, n in parts)
    preset_key = preset.key()
    cached = cache.get_many(preset_key, keys) if cache is not None else {}
    cached = {key: row for key, row in cached.items() if row.get("status") == "ok"}
    todo: dict[str, Structure | Composition] = {}
    for key, obj in zip(keys, objs, strict=True):
        if key not in cached and key not in todo:
            todo[key] = obj
    sink = (lambda rows: cache.put_many(preset_key, rows)) if cache is not None else None
    if not compute:
        blank = {"values": [math.nan] * len(preset.feature_labels()), "status": NOT_COMPUTED,
                 "errors": "not computed: the run was interrupted before this structure"}
        return {**cached, **{key: blank for key in todo}}, 0, len(set(keys) & set(cached))
    computed = _compute(list(todo.items()), preset, n_jobs, progress, sink)
    return {**cached, **computed}, len(computed), len(set(keys) & set(cached))


def featurize_structures(
    structures: Sequence[Structure],
    preset: str = "structure",
    *,
    sources: Sequence[str] | None = None,
    n_jobs: int = 1,
    use_cache: bool = True,
    cache: FeatureCache | None = None,
    progress: bool = False,
    limits: ValidationLimits | None = None,
    compute: bool = True,
) -> FeatureTable:
    """Featurize in-memory structures; invalid ones become failed rows, never exceptions.

    ``compute=False`` computes nothing: rows come from the cache or are marked ``not computed``.
    """
    spec = get_preset(preset)
    sources = list(sources) if sources is not None else [f"structure[{i}]" for i in range(len(structures))]
    limits = limits or ValidationLimits.from_env(allow_partial_occupancy=spec.handles_disorder)
    good, good_sources, failures = [], [], []
    for s, src in zip(structures, sources, strict=True):
        try:
            validate_structure(s, src, limits)
        except StructureInputError as exc:
            failures.append(FailedInput(exc.source, exc.reason))
            continue
        good.append(s)
        good_sources.append(src)
    return _featurize_valid(good, good_sources, spec, n_jobs, use_cache, cache, progress, failures, compute)


def _featurize_valid(
    structures: list[Structure],
    sources: list[str],
    spec: Preset,
    n_jobs: int,
    use_cache: bool,
    cache: FeatureCache | None,
    progress: bool,
    failures: list[FailedInput],
    compute: bool,
) -> FeatureTable:
    """Featurize structures that already passed ``validate_structure`` (warns about large cells)."""
    large = [(src, len(s)) for s, src in zip(structures, sources, strict=True) if len(s) > LARGE_CELL_SITES]
    if large and spec.needs_structure and compute:
        names = ", ".join(f"{src} ({n} sites)" for src, n in large[:3])
        warnings.warn(f"large cell(s) {names}{' ...' if len(large) > 3 else ''}: the {spec.name!r} preset's "
                      "site featurizers scale with the number of sites and may take minutes per structure; "
                      "finished rows are cached as they complete", LargeStructureWarning, stacklevel=3)
    keys = [structure_hash(s) for s in structures]
    return _featurize_objects(structures, keys, sources, spec, n_jobs, use_cache, cache, progress, failures,
                              compute)


def featurize_compositions(
    compositions: Sequence[Composition | str],
    preset: str = "composition",
    *,
    n_jobs: int = 1,
    use_cache: bool = True,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> FeatureTable:
    """Featurize compositions (e.g. alloy formulas) with a composition-only preset."""
    spec = get_preset(preset)
    if spec.needs_structure:
        raise ValueError(f"preset {preset!r} needs structures; use a composition preset such as 'composition'")
    comps, sources, failures = [], [], []
    for item in compositions:
        try:
            comp = item if isinstance(item, Composition) else Composition(str(item))
            if comp.num_atoms <= 0:
                raise ValueError("empty composition")
            unknown = [str(el) for el in comp.elements if not Element.is_valid_symbol(getattr(el, "symbol", ""))]
            if unknown:
                raise ValueError(f"unknown element symbol(s) {', '.join(unknown)}")
        except Exception as exc:
            failures.append(FailedInput(str(item), f"invalid composition ({exc})"))
            continue
        comps.append(comp)
        sources.append(str(item) if not isinstance(item, Composition) else comp.formula)
    keys = [composition_hash(c) for c in comps]
    return _featurize_objects(comps, keys, sources, spec, n_jobs, use_cache, cache, progress, failures)


def featurize_files(
    inputs: Sequence[str | os.PathLike],
    preset: str = "structure",
    *,
    n_jobs: int = 1,
    use_cache: bool = True,
    cache: FeatureCache | None = None,
    progress: bool = False,
    compute: bool = True,
) -> FeatureTable:
    """Read, validate and featurize files/directories/globs; unreadable files are listed, not fatal."""
    spec = get_preset(preset)
    batch = read_structures(list(inputs), ValidationLimits.from_env(allow_partial_occupancy=spec.handles_disorder))
    result = _featurize_valid([x.structure for x in batch.structures], [x.source for x in batch.structures],
                              spec, n_jobs, use_cache, cache, progress, [], compute)
    if batch.failures:
        extra = _assemble([], [], [], {}, spec.feature_labels(), batch.failures)
        result.table = pd.concat([result.table, extra]) if len(result.table) else extra
        result.failures = list(batch.failures) + result.failures
    return result


class FeatureCleaner(TransformerMixin, BaseEstimator):
    """Make a feature matrix model-ready under the NaN policy above (fit on training rows only).

    Drops columns that are all-NaN or constant in training; fills remaining NaN (and any inf) with the
    training median of the column.
    """

    def __init__(self, constant_tol: float = 0.0):
        self.constant_tol = constant_tol

    def fit(self, X, y=None):
        frame = pd.DataFrame(X).replace([np.inf, -np.inf], np.nan)
        medians = frame.median(skipna=True)
        spread = frame.max(skipna=True) - frame.min(skipna=True)
        keep = medians.notna() & (spread > self.constant_tol)
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.keep_ = np.asarray(keep.to_numpy(), dtype=bool)
        self.medians_ = medians.to_numpy(dtype=float)
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X):
        frame = pd.DataFrame(X).replace([np.inf, -np.inf], np.nan)
        if frame.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got {frame.shape[1]}")
        values = frame.to_numpy(dtype=float)
        values = np.where(np.isnan(values), self.medians_, values)
        return values[:, self.keep_]

    def get_feature_names_out(self, input_features=None):
        return self.feature_names_in_[self.keep_]

    @classmethod
    def from_medians(cls, medians, feature_names=None) -> FeatureCleaner:
        """A fitted cleaner that keeps every column and fills NaN/inf with the given training medians.

        What a saved model needs at prediction time: the medians of the columns it uses, nothing else.
        """
        medians = np.asarray(medians, dtype=float).ravel()
        cleaner = cls()
        cleaner.medians_ = medians
        cleaner.keep_ = np.ones(medians.size, dtype=bool)
        cleaner.n_features_in_ = medians.size
        names = range(medians.size) if feature_names is None else feature_names
        cleaner.feature_names_in_ = np.asarray(list(names), dtype=object)
        return cleaner

    def restrict(self, columns) -> FeatureCleaner:
        """The fitted cleaner of ``X[:, columns]``: those columns' medians, every one kept."""
        columns = np.asarray(columns, dtype=int)
        return type(self).from_medians(self.medians_[columns], self.feature_names_in_[columns])


def featurize_dataset(
    name: str,
    preset: str = "structure",
    *,
    n_jobs: int = 1,
    use_cache: bool = True,
    progress: bool = False,
    limit: int | None = None,
) -> FeatureTable:
    """Featurize a bundled dataset (see ``matflow.datasets.DATASETS``); rows are named by material id."""
    from matflow.datasets import DATASETS

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    frame = DATASETS[name]()
    if limit is not None:
        frame = frame.iloc[:limit]
    sources = [str(x) for x in frame["mp_id"]] if "mp_id" in frame else [str(i) for i in frame.index]
    return featurize_structures(list(frame["structure"]), preset, sources=sources, n_jobs=n_jobs,
                                use_cache=use_cache, progress=progress)
