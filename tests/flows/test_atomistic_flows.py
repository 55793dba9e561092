"""The CHGNet relax flow runs on Prefect's ephemeral server and reports a bad input without dying."""

from __future__ import annotations

import json
from pathlib import Path

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
