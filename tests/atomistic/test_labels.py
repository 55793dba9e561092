"""Resumable phonon-DOS labelling: rows per structure, skip on rerun, kill-safe, consolidation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matflow.atomistic.labels import (
    LABEL_TEMPERATURES_K,
    LabelRunError,
    consolidate_labels,
    label_dataset,
)
from matflow.atomistic.thermo import R_GAS, FrequencyGrid

FAST = {"supercell_min_length_A": 5.0, "mesh_length_A": 15.0}


@pytest.fixture(scope="module")
def tiny() -> dict:
    """Three tiny cells: fcc Cu (1 atom), rock-salt NaCl (2 atoms), diamond Si (2 atoms)."""
    fcc = Lattice([[0, 1.805, 1.805], [1.805, 0, 1.805], [1.805, 1.805, 0]])
    nacl = Lattice([[0, 2.82, 2.82], [2.82, 0, 2.82], [2.82, 2.82, 0]])
    si = Lattice([[0, 2.73, 2.73], [2.73, 0, 2.73], [2.73, 2.73, 0]])
    return {"Cu": Structure(fcc, ["Cu"], [[0, 0, 0]]),
            "NaCl": Structure(nacl, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
            "Si": Structure(si, ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])}


def test_label_rows_resume_and_consolidate(tiny, tmp_path):
    out = tmp_path / "labels"
    first = label_dataset(tiny, "chgnet", out, limit=2, settings=FAST)
    assert (first["n_labelled"], first["n_skipped_done"], first["n_failed"]) == (2, 0, 0)
    rows = sorted((out / "rows" / "custom").glob("*.json"))
    assert len(rows) == 2
    # a run killed while writing leaves only a temporary file: it must not count as done
    (out / "rows" / "custom" / ".deadbeef.json.tmp").write_text("{trunc")
    again = label_dataset(tiny, "chgnet", out, settings=FAST)
    assert (again["n_labelled"], again["n_skipped_done"]) == (1, 2)
    assert label_dataset(tiny, "chgnet", out, settings=FAST)["n_labelled"] == 0

    table = pd.read_parquet(consolidate_labels(out))
    assert sorted(table["id"]) == ["Cu", "NaCl", "Si"]
    grid = FrequencyGrid()
    for _, row in table.iterrows():
        dos = np.asarray(row["dos_states_per_THz_per_atom"])
        assert dos.shape == (grid.n_bins,) and dos.sum() * grid.bin_THz == pytest.approx(3.0, rel=1e-4)
        cv = np.asarray(row["Cv_J_per_K_mol_atom"])
        assert len(cv) == len(LABEL_TEMPERATURES_K) and 0 < cv[-1] < 3 * R_GAS
        assert np.all(np.diff(np.asarray(row["S_J_per_K_mol_atom"])) > 0)
        assert 0 < row["last_peak_THz"] <= row["max_frequency_THz"] + 0.3
        assert row["potential"] == "chgnet" and row["wall_time_s"] > 0
    si = table.set_index("id").loc["Si"]
    # Si optical peak: 15.3 THz (DFT, neutrons); universal potentials soften it by up to ~15 %
    assert 12.0 < si["last_peak_THz"] < 16.5
    text = (out / "PROVENANCE.md").read_text()
    assert "chgnet" in text and "custom: 3 structures labelled" in text and "renormalised" in text


def test_interrupted_run_keeps_finished_rows(tiny, tmp_path, monkeypatch):
    import matflow.atomistic.labels as labels

    out = tmp_path / "labels"
    real = labels.label_structure
    calls = []

    def dies_on_second(structure, calc, grid=None):
        calls.append(structure.composition.reduced_formula)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill in the middle of a structure
        return real(structure, calc, grid)

    monkeypatch.setattr(labels, "label_structure", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        label_dataset(tiny, "chgnet", out, settings=FAST)
    assert len(list((out / "rows" / "custom").glob("*.json"))) == 1
    monkeypatch.setattr(labels, "label_structure", real)
    resumed = label_dataset(tiny, "chgnet", out, settings=FAST)
    assert (resumed["n_labelled"], resumed["n_skipped_done"]) == (2, 1)


def test_refuses_mixing_settings_and_unknown_inputs(tiny, tmp_path):
    out = tmp_path / "labels"
    label_dataset({"Cu": tiny["Cu"]}, "chgnet", out, settings=FAST)
    with pytest.raises(LabelRunError, match="other potential"):
        label_dataset({"Cu": tiny["Cu"]}, "sevenn-0", out, settings=FAST)
    with pytest.raises(LabelRunError, match="'qm9': unknown"):
        label_dataset("qm9", "chgnet", tmp_path / "x")
    with pytest.raises(ValueError, match="'nope'"):
        label_dataset({"Cu": tiny["Cu"]}, "nope", tmp_path / "y")
    with pytest.raises(LabelRunError, match="no run.json"):
        consolidate_labels(tmp_path / "empty")


def test_failure_is_recorded_and_skipped(tmp_path):
    bad = Structure(Lattice.cubic(3.0), ["Cu", "Cu"], [[0, 0, 0], [0.001, 0, 0]])  # overlapping
    out = tmp_path / "labels"
    stats = label_dataset({"bad": bad}, "chgnet", out, settings=FAST)
    assert stats["n_failed"] == 1
    (failed,) = (out / "failed" / "custom").glob("*.json")
    assert json.loads(failed.read_text())["id"] == "bad"
    assert label_dataset({"bad": bad}, "chgnet", out, settings=FAST)["n_skipped_done"] == 1


def test_size_order_labels_the_smallest_cells_first(tiny, tmp_path):
    big_first = {"Si": tiny["Si"], "NaCl": tiny["NaCl"], "Cu": tiny["Cu"]}
    seen: list[str] = []
    label_dataset(big_first, "chgnet", tmp_path / "labels", settings=FAST, order="size",
                  progress=lambda ident, done, total: seen.append(ident))
    assert seen == ["Cu", "Si", "NaCl"]  # fewest atoms first, dataset order among equal sizes
    with pytest.raises(LabelRunError, match="order='random'"):
        label_dataset(big_first, "chgnet", tmp_path / "labels", order="random")
