"""Screen candidate HEAs from an element list: enumerate, fuse the evidence, rank, explain.

Candidates are every subset of the given elements with the requested number of components, on a
concentration grid within bounds (plus the equimolar alloy). Each is scored by an
``EvidenceFusion`` fitted on all labelled alloys and ranked by belief in a single-phase solid
solution, ties broken by the smaller belief–plausibility gap (the better-known candidate first).
Every row keeps each source's own opinion, the conflict between sources, the classical HEA
descriptors and, where the alloy has been made, its measured phase and reference.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core.periodic_table import Element

from matflow.evidence import belief, pignistic, plausibility
from matflow.provenance import file_sha256, installed_versions
from matflow.screening.composition import Composition, composition_key
from matflow.screening.data import default_labels_path, known_alloys_lookup, load_phase_labels
from matflow.screening.fusion import EvidenceFusion
from matflow.screening.phases import PHASE_MASKS, PHASES, SOLID_SOLUTION
from matflow.screening.sources.base import EvidenceSource
from matflow.settings import PROJECT_ROOT, get_settings

VALIDATION_FILE = PROJECT_ROOT / "benchmarks" / "results" / "hea_screening.json"

SOURCE_CLASSES: dict[str, tuple[str, str]] = {
    "rules": ("matflow.screening.sources.rules", "RulesSource"),
    "data": ("matflow.screening.sources.classifier", "DataSource"),
    "substitutability": ("matflow.screening.sources.substitutability", "SubstitutabilitySource"),
    "experts": ("matflow.screening.sources.experts", "ExpertKnowledgeSource"),
    "energetics": ("matflow.screening.sources.energetics", "EnergeticsSource"),
}
"""Where each evidence source lives; screening uses whichever import."""

DEFAULT_SOURCES: tuple[str, ...] = ("rules", "data", "substitutability", "experts")
"""The energetics source (CHGNet supercells per candidate) is left out by default for its cost."""

MAX_CANDIDATES = 200_000
"""Refuse grids larger than this: they would take hours to score and are rarely meant."""

_EPS = 1e-9


class ScreeningInputError(ValueError):
    """A screening request that cannot be run; the message names the argument and the reason."""


def available_sources(names: Sequence[str] = DEFAULT_SOURCES) -> tuple[list[EvidenceSource], dict]:
    """Instantiate the named sources that import; returns (sources, {name: why it was skipped})."""
    sources: list[EvidenceSource] = []
    skipped: dict[str, str] = {}
    for name in names:
        if name not in SOURCE_CLASSES:
            raise ScreeningInputError(
                f"source {name!r}: unknown; expected one of {', '.join(SOURCE_CLASSES)}"
            )
        module_name, class_name = SOURCE_CLASSES[name]
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
            sources.append(cls())
        except (ImportError, AttributeError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return sources, skipped


def _code_sha(cls: type) -> str:
    """sha256 of the module file that defines ``cls``: the cached rates belong to the code that
    produced the masses, and code changes within one matflow version are not in its number."""
    import inspect

    try:
        return file_sha256(inspect.getfile(cls))[:16]
    except (OSError, TypeError):
        return "unknown"


def _fusion_cache_key(sources: Sequence[EvidenceSource], labels_sha: str, rule: str) -> str:
    described = [[s.name, type(s).__qualname__, repr(sorted(s.get_params().items())),
                  _code_sha(type(s))]
                 for s in sources]
    described.append(["fusion", _code_sha(EvidenceFusion)])
    payload = json.dumps([described, labels_sha, rule, _package_versions()], default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@lru_cache(maxsize=2)
def _fitted_default_fusion(names: tuple[str, ...], labels_path: str, mtime: float) -> EvidenceFusion:
    """Fit on every labelled alloy. The discount rates and thresholds (the inner-CV part, the
    costly one) are kept as plain JSON in the cache dir, keyed by the sources' parameters, the
    label file's sha256 and the package versions; a later process only refits the sources."""
    sources, _ = available_sources(names)
    labels = load_phase_labels(labels_path)
    comps, phases = list(labels["composition"]), list(labels["phase"])
    key = _fusion_cache_key(sources, file_sha256(labels_path), "dempster")
    cache_file = get_settings().cache_dir / "hea_fusion" / f"{key}.json"
    if cache_file.is_file():
        try:
            state = json.loads(cache_file.read_text())
            reliabilities = {name: 1.0 - float(rate) for name, rate in state["rates"].items()}
            fusion = EvidenceFusion(sources, reliabilities=reliabilities).fit(comps, phases)
            fusion.threshold_single_phase_ = float(state["threshold_single_phase"])
            fusion.source_thresholds_ = {k: float(v) for k, v in state["source_thresholds"].items()}
            fusion.inner_brier_ = state.get("inner_brier")
            if state.get("base_rate") is not None:
                fusion.base_rate_ = np.asarray(state["base_rate"], dtype=float)
                fusion.base_rate_choice_ = state.get("base_rate_choice", "training")
            return fusion
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
            pass  # an unreadable cache entry is refitted and rewritten
    fusion = EvidenceFusion(sources).fit(comps, phases)
    state = {
        "rates": fusion.rates_,
        "threshold_single_phase": fusion.threshold_single_phase_,
        "source_thresholds": fusion.source_thresholds_,
        "inner_brier": fusion.inner_brier_,
        "base_rate": None if fusion.base_rate_ is None else fusion.base_rate_.tolist(),
        "base_rate_choice": fusion.base_rate_choice_,
        "labels_path": labels_path,
    }
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(cache_file)
    except OSError:
        pass  # caching is an optimisation only
    return fusion


def default_fusion(names: Sequence[str] = DEFAULT_SOURCES) -> EvidenceFusion:
    """The fusion of the available sources fitted on every labelled alloy (cached per process,
    its fitted discount rates cached on disk)."""
    path = default_labels_path()
    return _fitted_default_fusion(tuple(names), str(path), path.stat().st_mtime)


# ------------------------------------------------------------------------------ enumeration
def _check_elements(elements: Sequence[str]) -> list[str]:
    if isinstance(elements, str):
        raise ScreeningInputError(
            f"elements {elements!r}: give a list of symbols, e.g. ['Co', 'Cr', 'Fe', 'Ni']"
        )
    out = []
    for symbol in elements:
        if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol.strip()):
            raise ScreeningInputError(f"elements: unknown element {symbol!r}")
        out.append(symbol.strip())
    duplicates = sorted({s for s in out if out.count(s) > 1})
    if duplicates:
        raise ScreeningInputError(f"elements: {', '.join(duplicates)} given more than once")
    return sorted(out)


def _grid(k: int, units: int, low: int, high: int) -> Iterator[tuple[int, ...]]:
    """All k-tuples of integers in [low, high] summing to units."""
    if k == 1:
        if low <= units <= high:
            yield (units,)
        return
    for first in range(low, high + 1):
        rest = units - first
        if (k - 1) * low <= rest <= (k - 1) * high:
            for tail in _grid(k - 1, rest, low, high):
                yield (first, *tail)


def enumerate_candidates(
    elements: Sequence[str],
    *,
    components: Sequence[int] = (4, 5),
    step: float = 0.05,
    bounds: tuple[float, float] = (0.05, 0.35),
    equimolar: bool = True,
) -> list[Composition]:
    """Candidate compositions: for each subset of ``elements`` of each size in ``components``,
    every grid point (multiples of ``step``) with each fraction within ``bounds``, plus the
    equimolar alloy when it lies within the bounds. Sorted by (size, elements, fractions)."""
    symbols = _check_elements(elements)
    sizes = [components] if isinstance(components, int) else list(components)
    if not sizes:
        raise ScreeningInputError("components: empty; give the numbers of elements per alloy")
    for k in sizes:
        if not isinstance(k, int | np.integer) or k < 2:
            raise ScreeningInputError(f"components {k!r}: each must be an integer >= 2")
        if k > len(symbols):
            raise ScreeningInputError(
                f"components {k}: more than the {len(symbols)} elements given ({', '.join(symbols)})"
            )
    if not (isinstance(step, int | float) and math.isfinite(step) and 0 < step <= 0.5):
        raise ScreeningInputError(f"step {step!r}: must be a number in (0, 0.5]")
    units = round(1.0 / step)
    if abs(units * step - 1.0) > 1e-6:
        raise ScreeningInputError(f"step {step}: must divide 1 exactly (e.g. 0.05, 0.1, 0.025)")
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ScreeningInputError(f"bounds {bounds!r}: expected (low, high) fractions") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high <= 1):
        raise ScreeningInputError(f"bounds {bounds!r}: need 0 <= low <= high <= 1")
    low_u, high_u = math.ceil(low / step - _EPS), math.floor(high / step + _EPS)
    for k in sizes:
        if k * low > 1 + _EPS or k * high < 1 - _EPS or k * low_u > units or k * high_u < units:
            raise ScreeningInputError(
                f"bounds {bounds!r}: no {k}-component alloy has every fraction within them on a "
                f"{step} grid (need {k} x low <= 1 <= {k} x high)"
            )
    seen: set[str] = set()
    out: list[Composition] = []
    for k in sorted(set(int(s) for s in sizes)):
        grid = list(_grid(k, units, low_u, high_u))
        for subset in combinations(symbols, k):
            points = [tuple(u * step for u in p) for p in grid]
            if equimolar and low - _EPS <= 1.0 / k <= high + _EPS:
                points.append(tuple([1.0 / k] * k))
            for fractions in points:
                comp = dict(zip(subset, fractions, strict=True))
                key = composition_key(comp)
                if key not in seen:
                    seen.add(key)
                    out.append({el: float(x) for el, x in comp.items()})
                if len(out) > MAX_CANDIDATES:
                    raise ScreeningInputError(
                        f"step {step}, bounds {bounds}, components {sizes}: more than "
                        f"{MAX_CANDIDATES} candidates; use a coarser step or fewer elements"
                    )
    return out


# ------------------------------------------------------------------------------ result
@dataclass
class ScreeningResult:
    """Ranked candidates with the settings, provenance and validation they came from."""

    table: pd.DataFrame
    settings: dict[str, Any]
    provenance: dict[str, Any]
    validation: dict[str, Any] | None = None
    skipped_sources: dict[str, str] = field(default_factory=dict)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        document = {
            "settings": self.settings,
            "provenance": self.provenance,
            "validation": self.validation,
            "skipped_sources": self.skipped_sources,
            "candidates": json.loads(self.table.to_json(orient="records")),
        }
        path.write_text(json.dumps(document, indent=1, default=str))
        return path

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.table.to_csv(path, index=False)
        return path


def _package_versions() -> dict[str, str]:
    return installed_versions(("matflow", "numpy", "scikit-learn", "pandas", "pymatgen", "matminer",
                               "chgnet"), python=True)


def _data_files() -> list[dict[str, str]]:
    files = [default_labels_path()]
    experts = default_labels_path().parent.parent / "hea_dst_ha2025" / "AI_experts_knowledge.csv"
    if experts.is_file():
        files.append(experts)
    data_dir = default_labels_path().parent.parent
    # paths relative to the data folder: a report names the data set, not the machine it ran on
    return [{"path": f"data/{p.relative_to(data_dir)}" if p.is_relative_to(data_dir) else str(p),
             "sha256": file_sha256(p)} for p in files if p.is_file()]


def load_validation(path: str | Path = VALIDATION_FILE) -> dict[str, Any] | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _descriptors(comps: list[Composition]) -> pd.DataFrame:
    columns = ["delta_pct", "dHmix_kJmol", "dSmix_JmolK", "omega", "vec"]
    try:
        from matflow.screening.descriptors import describe_many

        described = describe_many(comps)
        return described.reindex(columns=columns).reset_index(drop=True)
    except (ImportError, ValueError):
        return pd.DataFrame(np.nan, index=range(len(comps)), columns=columns)


def _summaries(masses: np.ndarray, base_rate: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {
        "bel_SS": belief(masses, SOLID_SOLUTION),
        "pl_SS": plausibility(masses, SOLID_SOLUTION),
    }
    for phase in PHASES:
        out[f"bel_{phase}"] = belief(masses, PHASE_MASKS[phase])
        out[f"pl_{phase}"] = plausibility(masses, PHASE_MASKS[phase])
    bet = pignistic(masses, base_rate)
    for i, phase in enumerate(PHASES):
        out[f"p_{phase}"] = bet[:, i]
    return out


def _reason_text(source: str, info: dict[str, Any]) -> str:
    """A short human line from a source's explain() dict (first few scalar entries)."""
    if "summary" in info and isinstance(info["summary"], str):
        return f"{source}: {info['summary']}"
    parts = []
    for key, value in info.items():
        if key in ("source",):
            continue
        if isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, int | str) and len(str(value)) < 60:
            parts.append(f"{key}={value}")
        if len(parts) == 4:
            break
    return f"{source}: {', '.join(parts)}" if parts else f"{source}: no details"


def screen(
    elements: Sequence[str],
    *,
    components: Sequence[int] = (4, 5),
    step: float = 0.05,
    bounds: tuple[float, float] = (0.05, 0.35),
    equimolar: bool = True,
    fusion: EvidenceFusion | None = None,
    progress: Callable[[int, int], None] | None = None,
    explain_top: int = 200,
    chunk_size: int = 2000,
) -> ScreeningResult:
    """Enumerate, score and rank candidate alloys from ``elements``.

    ``fusion``: a fitted ``EvidenceFusion``; by default the available sources fitted on every
    labelled alloy (measured on 2 busy cores: 100 s the first time, 30 s once the fitted discount
    rates are in the cache dir). ``progress(done, total)`` is
    called after each chunk of candidates. Each source's ``explain`` runs on the ``explain_top``
    best-ranked candidates (it is per-candidate work); the other rows' reasons give each source's
    P(single-phase) from the table.
    """
    candidates = enumerate_candidates(
        elements, components=components, step=step, bounds=bounds, equimolar=equimolar
    )
    if explain_top < 0:
        raise ScreeningInputError(f"explain_top {explain_top}: must be >= 0")
    skipped: dict[str, str] = {}
    if fusion is None:
        fusion = default_fusion()
        _, skipped = available_sources(DEFAULT_SOURCES)
    elif not hasattr(fusion, "sources_"):
        raise ScreeningInputError("fusion: not fitted; call fusion.fit(compositions, phases) first")
    total = len(candidates)
    fused_parts, conflict_parts = [], []
    source_parts: dict[str, list[np.ndarray]] = {s.name: [] for s in fusion.sources_}
    for start in range(0, total, chunk_size):
        chunk = candidates[start : start + chunk_size]
        fused, conflict, per_source = fusion.masses(chunk)
        fused_parts.append(fused)
        conflict_parts.append(conflict)
        for name, m in per_source.items():
            source_parts[name].append(m)
        if progress is not None:
            progress(min(start + chunk_size, total), total)
    fused = np.concatenate(fused_parts)
    conflict = np.concatenate(conflict_parts)

    summary = _summaries(fused, fusion.base_rate_)
    bet = pignistic(fused, fusion.base_rate_)
    table = pd.DataFrame(
        {
            "composition": [composition_key(c) for c in candidates],
            "elements": [",".join(c) for c in candidates],
            "n_components": [len(c) for c in candidates],
            **{k: summary[k] for k in ("bel_SS", "pl_SS")},
        }
    )
    table["gap_SS"] = table["pl_SS"] - table["bel_SS"]
    for phase in PHASES:
        table[f"bel_{phase}"] = summary[f"bel_{phase}"]
        table[f"pl_{phase}"] = summary[f"pl_{phase}"]
    for phase in PHASES:
        table[f"p_{phase}"] = summary[f"p_{phase}"]
    table["predicted"] = np.asarray(PHASES)[np.argmax(bet, axis=1)]
    table["conflict"] = conflict
    table = pd.concat([table, _descriptors(candidates)], axis=1)
    for name, parts in source_parts.items():
        m = np.concatenate(parts)
        s_bet = pignistic(m, fusion.base_rate_)
        table[f"src_{name}_bel_SS"] = belief(m, SOLID_SOLUTION)
        table[f"src_{name}_pl_SS"] = plausibility(m, SOLID_SOLUTION)
        for i, phase in enumerate(PHASES):
            table[f"src_{name}_p_{phase}"] = s_bet[:, i]

    lookup = known_alloys_lookup(load_phase_labels())
    known = [lookup(c) for c in candidates]
    table["known_phase"] = [k[0] if k else "" for k in known]
    table["reference"] = [k[1] if k else "" for k in known]

    order = np.lexsort((table["composition"].to_numpy(), table["gap_SS"].to_numpy(),
                        -table["bel_SS"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    ranked = [candidates[i] for i in order]
    table.insert(0, "rank", np.arange(1, len(table) + 1))

    reasons = []
    for row, comp in enumerate(ranked):
        lines = []
        if row < explain_top:
            for source in fusion.sources_:
                try:
                    lines.append(_reason_text(source.name, source.explain(comp)))
                except (ValueError, KeyError) as exc:
                    lines.append(f"{source.name}: no explanation ({exc})")
        else:
            for source in fusion.sources_:
                p_ss = 1.0 - table.at[row, f"src_{source.name}_p_MP"]
                lines.append(f"{source.name}: P(SS)={p_ss:.2f}")
        if table.at[row, "conflict"] > 0.3:
            lines.append(f"sources disagree (conflict {table.at[row, 'conflict']:.2f})")
        reasons.append("; ".join(lines))
    table["reasons"] = reasons

    settings = {
        "elements": _check_elements(elements),
        "components": [int(k) for k in ([components] if isinstance(components, int) else components)],
        "step": step,
        "bounds": [float(b) for b in bounds],
        "equimolar": equimolar,
        "rule": fusion.rule,
        "sources": [s.name for s in fusion.sources_],
        "discount_rates": dict(fusion.rates_),
        "base_rate": fusion.base_rate_choice_,
        "threshold_single_phase": float(getattr(fusion, "threshold_single_phase_", 0.5)),
        "n_candidates": total,
        "explain_top": explain_top,
    }
    provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_files": _data_files(),
        "versions": _package_versions(),
        "method": "Dempster-Shafer fusion after Ha et al., arXiv:2502.14631 (2025)",
    }
    return ScreeningResult(
        table=table,
        settings=settings,
        provenance=provenance,
        validation=load_validation(),
        skipped_sources=skipped,
    )
