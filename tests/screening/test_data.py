"""The bundled experimental phase labels and the known-alloy lookup."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from matflow.screening.data import PhaseDataError, known_alloys_lookup, load_phase_labels
from matflow.screening.phases import PHASES


def test_bundled_labels_shape_and_content() -> None:
    df = load_phase_labels()
    assert {"composition_key", "composition", "element_set", "n_elements", "phase", "sources",
            "reference"} <= set(df.columns)
    # 7,784 rows minus 100 conflicts minus 9 single-element rows, minus key merges
    assert 7600 < len(df) <= 7675
    assert set(df["phase"]) == set(PHASES)
    assert df["composition_key"].is_unique
    assert (df["n_elements"] >= 2).all()
    assert all(abs(sum(c.values()) - 1) < 1e-9 for c in df["composition"].head(50))
    assert (df["reference"].str.len() > 0).all()


def test_lookup_finds_cantor_alloy_and_misses_unknown() -> None:
    lookup = known_alloys_lookup(load_phase_labels())
    phase, reference = lookup("CoCrFeMnNi")
    assert phase == "FCC"
    assert reference.startswith("doi:")
    assert lookup({"Os": 0.3, "Ir": 0.3, "Tc": 0.4}) is None


def test_conflicts_are_excluded(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv.gz"
    text = (
        "composition_key,n_elements,sources,canonical_phase,has_conflict,borg_doi\n"
        "Co0.5000Ni0.5000,2,pei2020,FCC,0,\n"
        "Cr0.5000Fe0.5000,2,pei2020;peivaste,,1,\n"
        "Fe1.0000,1,pei2020,BCC,0,\n"
        "Al0.5000Ti0.5000,2,borg2020,multi-phase,0,10.1/xyz\n"
    )
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    df = load_phase_labels(path)
    assert list(df["composition_key"]) == ["Co0.5000Ni0.5000", "Al0.5000Ti0.5000"]
    assert list(df["phase"]) == ["FCC", "MP"]
    assert df["reference"].iloc[1] == "doi:10.1/xyz"
    assert "Pei" in df["reference"].iloc[0]


def test_bad_files_raise_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(PhaseDataError, match="not found"):
        load_phase_labels(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("composition_key,phase\nCo0.5Ni0.5,FCC\n")
    with pytest.raises(PhaseDataError, match="missing columns") as info:
        load_phase_labels(bad)
    assert "bad.csv" in str(info.value)
    weird = tmp_path / "weird.csv"
    weird.write_text(
        "composition_key,sources,canonical_phase,has_conflict\nCo0.5Ni0.5,pei2020,liquid,0\n"
    )
    with pytest.raises(PhaseDataError, match="unknown phase 'liquid'"):
        load_phase_labels(weird)
