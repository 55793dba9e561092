"""The CHGNet relax flow runs on Prefect's ephemeral server and reports a bad input without dying."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure


def test_relax_flow_relaxes_good_input_and_reports_bad(tmp_path):
    from flows.atomistic import relax

    si = Structure(Lattice.cubic(5.6), ["Si"] * 8,
                   [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.25, 0.25, 0.25],
                    [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75]])
    si.to(filename=str(tmp_path / "Si.cif"))
    (tmp_path / "broken.cif").write_text("")
    out = tmp_path / "out"
    summary = relax(inputs=[str(tmp_path / "Si.cif"), str(tmp_path / "broken.cif")], outdir=str(out),
                    optimizer="BFGS", fmax_eV_per_A=0.05)
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    assert summary["failures"][0]["source"].endswith("broken.cif")
    assert summary["failures"][0]["reason"] == "empty file"
    row = summary["results"][0]
    assert row["converged"] and row["final_volume_A3"] < row["initial_volume_A3"]
    assert (Path(row["output"]) / "relaxed.cif").exists()
    assert json.loads((out / "relax_summary.json").read_text())["n_ok"] == 1


def _cu_cif(folder: Path) -> Path:
    path = folder / "Cu.cif"
    Structure(Lattice.cubic(3.61), ["Cu"] * 4,
              [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]).to(filename=str(path))
    return path


def test_md_flow_runs_and_resumes(tmp_path):
    from flows.atomistic import md

    cif = _cu_cif(tmp_path)
    out = tmp_path / "md"
    first = md(inputs=[str(cif)], outdir=str(out), n_steps=4, temperature_K=300.0, analyze=False)
    assert first["n_ok"] == 1 and first["n_failed"] == 0
    # a rerun with the same settings (as after a crash, or a flow retry) resumes, duplicating nothing
    again = md(inputs=[str(cif)], outdir=str(out), n_steps=4, temperature_K=300.0, analyze=False)
    assert again["n_ok"] == 1
    assert again["results"][0]["n_frames"] == first["results"][0]["n_frames"]
    # other settings in the same folder are refused with a reason, not silently mixed
    # (that was the only input, so the flow run ends Failed: "all 1 inputs failed")
    from flows.states import AllInputsFailed

    with pytest.raises(AllInputsFailed) as info:
        md(inputs=[str(cif)], outdir=str(out), n_steps=4, temperature_K=600.0, analyze=False)
    other = info.value.summary
    assert other["n_failed"] == 1 and "checkpoint belongs to a run with other settings" in \
        other["failures"][0]["reason"]


def test_phonons_and_label_flows(tmp_path):
    from flows.atomistic import label_vib_thermo, phonons

    cif = _cu_cif(tmp_path)
    summary = phonons(inputs=[str(cif)], outdir=str(tmp_path / "ph"), supercell_min_length_A=6.0,
                      relax=False, t_max_K=300.0, t_step_K=100.0)
    assert summary["n_ok"] == 1
    cv = summary["results"][0]["Cv_300K_J_per_K_mol_atom"]
    assert 0.8 * 3 * 8.314 < cv < 3 * 8.314  # Cu at 300 K is close to, and below, Dulong-Petit
    labels = label_vib_thermo(inputs=[str(cif)], output=str(tmp_path / "labels.parquet"),
                              temperatures_K=[100.0, 300.0], supercell_min_length_A=6.0, relax=False)
    assert labels["n_ok"] == 1 and labels["n_rows"] == 2  # one structure x two temperatures
    table = pd.read_parquet(labels["output"])
    assert list(table["temperature_K"]) == [100.0, 300.0]
    assert table["Cv_J_per_K_mol_atom"].iloc[1] == pytest.approx(cv, rel=1e-6)  # same phonons as above
