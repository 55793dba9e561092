"""Predict a registered model's properties for structures and structure files.

Featurize with the model's preset (through the feature cache), predict values with intervals and
applicability flags (``RegisteredModel.predict_table``), and say for every structure whether it is in
the model's training data, with its training label: a prediction for a training structure is not a
test of the model, and the label is the better number.

Membership is decided first by the structure hash (the feature table's index) against the hashes of
the training dataset's structures. A structure whose hash differs (another relaxation, the rounding of
a CIF) still counts when a training structure of the same reduced formula is the same crystal by
pymatgen's ``StructureMatcher`` (default tolerances, volumes normalised): the model has seen that
material and its label. The training row named by a Materials Project id in the source (``mp-988.cif``,
source ``mp-988``) is tried first, so the match reports that id. The dataset's hashes, formulas, ids,
numeric columns and compact structures are computed once (about 1 s, most of it parsing the dataset;
hashing 1,265 structures takes 0.15 s) and kept in ``cache_dir/training_hashes/<dataset>.json``, keyed
by the data files' names, sizes and modification times and by the hash function's code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Lattice, Structure

from matflow.outputs import atomic_write_text

__all__ = ["TrainingSet", "training_set", "predict_structures", "predict_files", "membership_lines",
           "prediction_table_text"]

_FORMAT = 2
_SYMBOL = re.compile(r"[A-Z][a-z]?")
_MP_ID = re.compile(r"(?<![A-Za-z0-9-])(mp-\d+)(?!\d)")
_MEMO: dict[tuple[str, str], TrainingSet] = {}


@dataclass(frozen=True)
class TrainingSet:
    """Structure hashes, material ids, reduced formulas, numeric columns and compact structures of a
    bundled dataset, in row order."""

    dataset: str
    hashes: list[str]
    mp_ids: list[str | None]
    formulas: list[str]
    labels: dict[str, list]
    """column -> one value per row: a float, or a list of floats for a function of T."""
    structures: list[dict]
    """per row: ``lattice`` (3x3, Å), ``species`` and fractional ``coords``."""

    def structure(self, row: int) -> Structure:
        item = self.structures[row]
        return Structure(Lattice(item["lattice"]), item["species"], item["coords"])

    def row_of_hash(self) -> dict[str, int]:
        return {h: i for i, h in enumerate(self.hashes)}

    def row_of_mp_id(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.mp_ids) if m}

    @cached_property
    def first_row_of_element(self) -> dict[str, int]:
        """Each element's first row, so the elements of any leading ``n`` rows come without a scan."""
        first: dict[str, int] = {}
        for row, item in enumerate(self.structures):
            for species in set(item["species"]):  # "Si", "O2-" or "Fe:0.5, Ni:0.5"
                for element in _SYMBOL.findall(species):
                    first.setdefault(element, row)
        return first

    def rows_of_formula(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, formula in enumerate(self.formulas):
            out.setdefault(formula, []).append(i)
        return out


def _fingerprint(data_dir: Path) -> str:
    """Changes when a file under the data folder or the structure hash function changes."""
    from matflow.structures import structure_hash

    h = hashlib.sha256(f"{_FORMAT}".encode())
    h.update(inspect.getsource(structure_hash).encode())
    if data_dir.is_dir():
        for root, dirs, files in os.walk(data_dir):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                stat = path.stat()
                h.update(f"{path.relative_to(data_dir)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _numeric(value) -> float | list[float] | None:
    """A label as JSON-safe number(s), or None for a non-numeric column value."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, list | tuple | np.ndarray):
        try:
            return [float(v) for v in np.asarray(value, dtype=float).ravel()]
        except (TypeError, ValueError):
            return None
    return None


def _build(dataset: str) -> TrainingSet:
    from matflow.datasets import DATASETS
    from matflow.structures import structure_hash

    frame = DATASETS[dataset]().reset_index(drop=True)
    labels: dict[str, list] = {}
    for column in frame.columns:
        if column in ("structure", "mp_id", "formula"):
            continue
        values = [_numeric(v) for v in frame[column]]
        if all(v is not None for v in values):
            labels[str(column)] = values
    mp_ids = [str(m) if isinstance(m, str) and m else None for m in frame["mp_id"]] if "mp_id" in frame \
        else [None] * len(frame)
    compact = [{"lattice": s.lattice.matrix.tolist(), "species": [site.species_string for site in s],
                "coords": s.frac_coords.tolist()} for s in frame["structure"]]
    return TrainingSet(dataset, [structure_hash(s) for s in frame["structure"]], mp_ids,
                       [s.composition.reduced_formula for s in frame["structure"]], labels, compact)


def training_set(dataset: str) -> TrainingSet | None:
    """The hashes and labels of a bundled dataset (from the disk cache when current); None when
    ``dataset`` is not bundled (a model trained on other data: membership is unknown)."""
    from matflow.datasets import DATASETS
    from matflow.settings import get_settings

    if dataset not in DATASETS:
        return None
    settings = get_settings()
    key = _fingerprint(Path(settings.data_dir))
    memo = _MEMO.get((dataset, key))
    if memo is not None:
        return memo
    path = Path(settings.cache_dir) / "training_hashes" / f"{dataset}.json"
    found = None
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key and stored.get("dataset") == dataset:
            found = TrainingSet(dataset, stored["hashes"], stored["mp_ids"], stored["formulas"], stored["labels"],
                                stored["structures"])
    except (OSError, ValueError, KeyError, TypeError):
        found = None
    if found is None:
        found = _build(dataset)
        atomic_write_text(path, json.dumps({"key": key, "dataset": dataset, "hashes": found.hashes,
                                            "mp_ids": found.mp_ids, "formulas": found.formulas,
                                            "labels": found.labels, "structures": found.structures}))
    _MEMO[(dataset, key)] = found
    return found


def _mp_id(source: str) -> str | None:
    """A Materials Project id named by a source (its file name, not the folders above it)."""
    match = _MP_ID.search(Path(str(source)).name)
    return match.group(1) if match else None


def _same_structure(a: Structure, b: Structure) -> bool:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    try:
        return bool(StructureMatcher().fit(a, b))
    except Exception:  # a matcher failure is not evidence of sameness
        return False


@dataclass
class _Member:
    row: int | None
    match: str


def _memberships(model, table: pd.DataFrame, structure_of: Callable[[str, str], Structure | None]) -> list[_Member]:
    """Per ok row of ``table`` (in order): the training-set row it is, and how that was decided."""
    train = training_set(model.manifest["training_data"]["dataset"])
    if train is None:
        return [_Member(None, "unknown") for _ in range(len(table))]
    n_train = int(model.manifest["training_data"].get("n_rows") or len(train.hashes))
    # a model trained on the first n rows (``limit``) saw rows 0..n-1; with n equal to the dataset's
    # length, every row (rows that failed featurization fail again here and are never predicted)
    limit = min(n_train, len(train.hashes))
    by_hash, by_id, by_formula = train.row_of_hash(), train.row_of_mp_id(), train.rows_of_formula()
    out = []
    for key, source, formula in zip(table.index, table["source"], table["formula"], strict=True):
        row = by_hash.get(key)
        if row is not None and row < limit:
            out.append(_Member(row, "structure hash"))
            continue
        candidates = [r for r in by_formula.get(formula, []) if r < limit]
        mine = structure_of(key, source) if candidates else None
        mp_id = _mp_id(source)
        named = by_id.get(mp_id) if mp_id else None
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
        found = None
        for r in candidates if mine is not None else []:
            if _same_structure(mine, train.structure(r)):
                found = r
                break
        if found is None:
            out.append(_Member(None, ""))
        elif found == named:
            out.append(_Member(found, f"material id {mp_id}"))
        else:
            out.append(_Member(found, f"structure match {train.mp_ids[found] or f'row {found}'}"))
    return out


def dataset_elements(dataset: str, n_rows: int | None = None) -> set[str] | None:
    """Elements present in the first ``n_rows`` (default: all) rows of a bundled dataset; None when
    the dataset is not bundled."""
    train = training_set(dataset)
    if train is None:
        return None
    limit = len(train.hashes) if n_rows is None else n_rows
    return {element for element, row in train.first_row_of_element.items() if row < limit}


def training_elements(model) -> set[str] | None:
    """Elements present in the rows ``model`` was trained on; None when its dataset is not bundled.

    A structure with an element the model never saw is extrapolation whatever its feature distance:
    element-statistics features of a new element can sit close to known ones (holding out every
    oxide of Alexandria leaves its rows near the others in feature space)."""
    data = model.manifest["training_data"]
    return dataset_elements(data["dataset"], int(data["n_rows"]) if data.get("n_rows") else None)


def unseen_elements(formula: str, seen: set[str] | None) -> str:
    """Comma-separated elements of ``formula`` outside ``seen`` ("" when none or unknown)."""
    if seen is None:
        return ""
    return ",".join(sorted(el.symbol for el in Composition(formula).elements if el.symbol not in seen))


def _label(value, j: int) -> float:
    if isinstance(value, list):
        return float(value[j]) if j < len(value) else math.nan
    return float(value) if value is not None else math.nan


def _with_membership(model, table, structure_of) -> pd.DataFrame:
    """``model.predict_table(table)`` plus ``in_training_data``, ``training_label``, ``training_match``."""
    rows = model.predict_table(table)
    ok = table.table[table.table["status"] == "ok"]
    members = _memberships(model, ok, structure_of)
    train = training_set(model.manifest["training_data"]["dataset"]) if members else None
    unknown = bool(members) and members[0].match == "unknown"
    seen = training_elements(model) if len(ok) else None
    unseen_per_row = [unseen_elements(f, seen) for f in ok["formula"]]
    in_train, labels, how, unseen = [], [], [], []
    # predict_table's layout: target-major, then sub-targets, then the ok rows in table order
    for target in model.manifest["targets"]:
        column = target.get("column", "")
        values = train.labels.get(column) if train is not None else None
        for j in range(target["n_outputs"]):
            for m in members:
                in_train.append(None if unknown else m.row is not None)
                labels.append(_label(values[m.row], j) if (m.row is not None and values is not None) else math.nan)
                how.append(m.match)
            unseen.extend(unseen_per_row)
    if len(in_train) != len(rows):  # pragma: no cover - guards the layout assumption above
        raise RuntimeError("prediction rows do not line up with the featurized structures")
    rows["in_training_data"] = pd.Series(in_train, index=rows.index, dtype=object if unknown else bool)
    rows["training_label"] = pd.Series(labels, index=rows.index, dtype=float)
    rows["training_match"] = pd.Series(how, index=rows.index, dtype=object)
    rows["unseen_elements"] = pd.Series(unseen, index=rows.index, dtype=object)
    known = rows["unseen_elements"].eq("")
    rows["in_domain"] = rows["in_domain"].astype(bool) & known
    # the interval was calibrated on rows made of known elements: none is honest for a new one
    rows["interval_ok"] = rows["interval_ok"].astype(bool) & known
    rows.loc[~known, ["lower", "upper"]] = np.nan
    return rows


def predict_structures(model, structures: Sequence[Structure], sources: Sequence[str] | None = None, *,
                       n_jobs: int = 1, use_cache: bool = True, progress: bool = False):
    """Featurize structures with the model's preset and predict; returns (rows DataFrame, failures).

    ``sources`` name the structures in the rows (default ``structure[i]``); a source that is or names
    a Materials Project id (``mp-988``) lets a structure of that material count as training data
    though its hash differs. Rows carry, besides ``predict_table``'s columns, ``in_training_data``
    (bool; None when the training dataset is not bundled), ``training_label`` (the dataset's value for
    that target, NaN when not in training) and ``training_match`` (``structure`` for an identical
    structure, ``material id mp-…`` for a match by id, else empty).
    """
    from matflow.featurize import featurize_structures
    from matflow.structures import structure_hash

    structures = list(structures)
    table = featurize_structures(structures, model.preset, sources=sources, n_jobs=n_jobs,
                                 use_cache=use_cache, progress=progress)
    by_hash: dict[str, Structure] = {}

    def structure_of(key: str, source: str) -> Structure | None:
        if not by_hash:
            by_hash.update((structure_hash(s), s) for s in structures)
        return by_hash.get(key)

    return _with_membership(model, table, structure_of), table.failures


def _reread(key: str, source: str) -> Structure | None:
    """The structure with hash ``key`` from the file a source names (``file`` or ``file@i``)."""
    from matflow.io import read_structure_file
    from matflow.structures import structure_hash

    path = Path(source)
    if not path.is_file() and "@" in source:
        head, _, tail = source.rpartition("@")
        path = Path(head) if tail.isdigit() else path
    try:
        candidates = read_structure_file(path)
    except Exception:
        return None
    return next((s for s in candidates if structure_hash(s) == key), None)


def predict_files(model, inputs: Sequence[str | os.PathLike], *, n_jobs: int = 1, use_cache: bool = True,
                  progress: bool = False):
    """Read, validate, featurize and predict files, folders or globs; returns (rows DataFrame, failures).

    Bad files are returned as failures, not raised. The rows are ``predict_structures``'s; a file named
    by a Materials Project id (``mp-988.cif``) can match its training material by that id.
    """
    from matflow.featurize import featurize_files

    table = featurize_files([str(x) for x in inputs], model.preset, n_jobs=n_jobs, use_cache=use_cache,
                            progress=progress)
    return _with_membership(model, table, _reread), table.failures


def _train_cell(in_training, label: float) -> str:
    if in_training is None or (isinstance(in_training, float) and math.isnan(in_training)):
        return "unknown"
    if not in_training:
        return "no"
    return f"yes (label {label:.4g})" if math.isfinite(label) else "yes"


def _unseen(row) -> str:
    """The row's unseen elements, "" when none or not recorded (older tables, NaN from a file)."""
    value = getattr(row, "unseen_elements", "")
    return value if isinstance(value, str) else ""


def _domain_cell(row) -> str:
    if _unseen(row):
        return f"NO (element never in training data: {_unseen(row)})"
    return "yes" if row.in_domain else "NO (far from training data)"


def _interval_cell(row) -> str:
    if getattr(row, "interval_ok", True):
        return f"[{row.lower:.4g}, {row.upper:.4g}] ({row.coverage:.0%})"
    if _unseen(row):
        return "none: element never in training data"
    return "none: farther from the training data than any calibration row"


def prediction_table_text(rows: pd.DataFrame) -> str:
    """Fixed-width text table: source, formula, target, value, interval, unit, domain flag and whether
    the structure is in the training data (with its training label)."""
    header = ["source", "formula", "target", "value", "interval", "unit", "in_domain", "train"]
    body = [[str(r.source), str(r.formula), str(r.target), f"{r.value:.4g}",
             _interval_cell(r), str(r.unit),
             _domain_cell(r),
             _train_cell(getattr(r, "in_training_data", None), float(getattr(r, "training_label", math.nan)))]
            for r in rows.itertuples()]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def membership_lines(rows: pd.DataFrame, model) -> list[str]:
    """Sentences saying which predicted structures are in ``model``'s training data, with the label
    next to the prediction, or that none is; for a demo, a report or a log."""
    ref = f"{model.name}@{model.version}"
    dataset = model.manifest["training_data"]["dataset"]
    if rows.empty:
        return [f"{ref}: no structure was predicted"]
    if "in_training_data" not in rows or rows["in_training_data"].isna().any():
        return [f"{ref}: training data membership unknown (dataset {dataset!r} is not bundled)"]
    structures = rows.drop_duplicates("source")
    members = rows[rows["in_training_data"].astype(bool)]
    if members.empty:
        return [f"{ref}: none of the {len(structures)} predicted structures is in its training data "
                f"({dataset})"]
    lines = []
    for source, group in members.groupby("source", sort=False):
        first = group.iloc[0]
        shown = group.head(3)
        values = "; ".join(f"{r.target} training label {r.training_label:.4g} {r.unit}, predicted {r.value:.4g}"
                           for r in shown.itertuples())
        more = f" (and {len(group) - len(shown)} more outputs)" if len(group) > len(shown) else ""
        lines.append(f"{ref}: {first['formula']} ({source}) is in its training data ({dataset}, matched by "
                     f"{first['training_match']}): {values}{more}")
    outside = len(structures) - members["source"].nunique()
    lines.append(f"{ref}: the other {outside} of {len(structures)} predicted structures are not in its "
                 "training data" if outside else f"{ref}: all predicted structures are in its training data")
    return lines
