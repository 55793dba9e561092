"""MD over files: each structure keeps its own folder (name + structure hash) whatever the order or
subset of inputs, and the batch summary keeps the entries of structures not rerun."""

from __future__ import annotations

import json

from pymatgen.core import Lattice, Structure

from matflow.atomistic.batch import md_files
from matflow.atomistic.md import MDSettings
from matflow.structures import structure_hash


def _cu(a: float) -> Structure:
    return Structure(Lattice.cubic(a), ["Cu"] * 4,
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _poscars(tmp_path):
    """Two different structures, both named POSCAR (in folders x/ and y/)."""
    paths = {}
    for name, a in (("x", 3.61), ("y", 3.66)):
        (tmp_path / name).mkdir()
        paths[name] = tmp_path / name / "POSCAR"
        _cu(a).to(filename=str(paths[name]), fmt="poscar")
    return paths, {name: f"{name}_POSCAR-{structure_hash(_cu(a))[:8]}"
                   for name, a in (("x", 3.61), ("y", 3.66))}


def test_subset_and_reordered_reruns_map_each_input_to_its_own_run(tmp_path):
    paths, folders = _poscars(tmp_path)
    out = tmp_path / "md"
    s = MDSettings(n_steps=3, checkpoint_every=2)
    both = md_files([str(paths["x"]), str(paths["y"])], out, s, analyze=False)
    assert both["n_ok"] == 2, both["failures"]
    assert {r["folder"] for r in both["results"]} == set(folders.values())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(folders.values())

    only_y = md_files([str(paths["y"])], out, s, analyze=False)  # y alone used to land in x's run
    assert only_y["n_ok"] == 1 and only_y["n_failed"] == 0, only_y["failures"]
    row = only_y["results"][0]
    assert row["folder"] == folders["y"] and row["n_steps"] == 3
    assert row["input_hash"] == next(r for r in both["results"]
                                     if r["folder"] == folders["y"])["input_hash"]

    summary = json.loads((out / "md_summary.json").read_text())
    assert summary["n_ok"] == 2  # x's entry survives the subset rerun
    assert {r["folder"] for r in summary["results"]} == set(folders.values())

    reordered = md_files([str(paths["y"]), str(paths["x"])], out,
                         MDSettings(n_steps=5, checkpoint_every=2), analyze=False)
    assert reordered["n_failed"] == 0, reordered["failures"]
    assert {r["folder"]: r["resumed_from_step"] for r in reordered["results"]} == \
        {folders["y"]: 3, folders["x"]: 3}  # both extended from their own checkpoints


def test_summary_replaces_a_failure_once_the_input_succeeds(tmp_path):
    paths, folders = _poscars(tmp_path)
    out = tmp_path / "md"
    hot = md_files([str(paths["x"])], out, MDSettings(n_steps=2, temperature_K=9000), analyze=False)
    assert hot["n_failed"] == 1 and "ceiling for Cu4" in hot["failures"][0]["reason"]
    md_files([str(paths["y"])], out, MDSettings(n_steps=2), analyze=False)
    md_files([str(paths["x"])], out, MDSettings(n_steps=2), analyze=False)
    summary = json.loads((out / "md_summary.json").read_text())
    assert summary["n_failed"] == 0 and summary["failures"] == []
    assert sorted(r["folder"] for r in summary["results"]) == sorted(folders.values())
