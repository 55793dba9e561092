"""CLI for CHGNet atomistics: relax, md and phonons on a tiny cell plus a bad file, with exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from matflow.cli import app

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    Structure(Lattice.cubic(3.7), ["Cu"] * 4,
              [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]).to(filename=str(folder / "Cu.cif"))
    shutil.copy(DATA / "bad" / "overlapping_atoms.cif", folder)
    return folder


def _only(paths) -> Path:
    (path,) = list(paths)
    return path


def test_relax_cli_reports_units_and_partial_failure(inputs, tmp_path):
    result = runner.invoke(app, ["relax", str(inputs), "-o", str(tmp_path / "out"), "--max-steps", "30"])
    assert result.exit_code == 1, result.output
    line = re.search(rf"^{re.escape(str(inputs / 'Cu.cif'))}: E = (-?[\d.]+) eV/atom, V = ([\d.]+) -> ([\d.]+) Å³, "
                     r"P = (-?[\d.]+) GPa, max \|F\| = ([\d.]+) eV/Å, (\d+) steps$", result.output, re.M)
    assert line, result.output
    record = json.loads(_only((tmp_path / "out").rglob("relax.json")).read_text())
    e, v0, v1, p, fmax, n = (float(x) for x in line.groups())
    assert (e, v0, v1, p, fmax, n) == (round(record["final_energy_eV_per_atom"], 4),
                                       round(record["initial_volume_A3"], 2), round(record["final_volume_A3"], 2),
                                       round(record["pressure_GPa"], 2), round(record["max_force_eV_per_A"], 3),
                                       record["n_steps"])
    assert v0 == round(3.7 ** 3, 2)
    assert 3.57 ** 3 < v1 < 3.66 ** 3  # Cu: a = 3.615 Å measured; universal potentials within about 1 %
    assert record["converged"] and fmax <= 0.05
    assert f"failed {inputs / 'overlapping_atoms.cif'}: atoms too close: sites 0 and 1 are 0.300 Å apart" \
        in result.output
    assert _only((tmp_path / "out").rglob("relaxed.cif")).parent == _only((tmp_path / "out").rglob("relax.json")).parent


def test_md_cli_writes_trajectory(inputs, tmp_path):
    (inputs / "overlapping_atoms.cif").unlink()
    out = tmp_path / "md"
    result = runner.invoke(app, ["md", str(inputs / "Cu.cif"), "-o", str(out), "-n", "4", "-T", "300",
                                 "--no-analysis"])
    assert result.exit_code == 0, result.output
    from ase.io import read

    trajectory = _only(out.rglob("*.extxyz"))
    assert trajectory.name == "trajectory.extxyz"
    frames = read(trajectory, index=":")
    assert [f.info["step"] for f in frames] == [0, 1, 2, 3, 4]
    mean_t = np.mean([f.info["temperature_K"] for f in frames])
    assert f"Cu.cif: 4 steps x 2.0 fs, 5 frames, mean T = {mean_t:.0f} K, trajectory {trajectory}" in result.output


def test_phonons_cli_prints_per_atom_thermodynamics(inputs, tmp_path):
    (inputs / "overlapping_atoms.cif").unlink()
    result = runner.invoke(app, ["phonons", str(inputs / "Cu.cif"), "-o", str(tmp_path / "ph"),
                                 "--supercell-min-length", "6", "--no-relax", "--t-max", "300",
                                 "--t-step", "100"])
    assert result.exit_code == 0, result.output
    record = json.loads(_only((tmp_path / "ph").rglob("phonons.json")).read_text())
    assert record["temperatures_K"] == [0.0, 100.0, 200.0, 300.0]
    s, cv, f = (record[k][-1] for k in ("S_J_per_K_mol_atom", "Cv_J_per_K_mol_atom", "F_kJ_per_mol_atom"))
    assert (f"Cu.cif: S(300 K) = {s:.2f} J/K/mol-atom, Cv(300 K) = {cv:.2f} J/K/mol-atom, "
            f"F_vib(300 K) = {f:.3f} kJ/mol-atom, min freq = ") in result.output
    assert "IMAGINARY" not in result.output and not record["has_imaginary_modes"]
    r_gas = 8.314462618
    assert 0.9 * 3 * r_gas < cv < 3 * r_gas  # Cu (Debye temperature 343 K) at 300 K: near Dulong-Petit
    # units agree: S = -dF/dT, between 200 and 300 K to the 1 % of a two-point difference
    s_200 = record["S_J_per_K_mol_atom"][-2]
    f_200 = record["F_kJ_per_mol_atom"][-2]
    assert -(f - f_200) * 1000 / 100 == pytest.approx((s + s_200) / 2, rel=0.02)


def test_unknown_optimizer_is_usage_error(inputs, tmp_path):
    result = runner.invoke(app, ["relax", str(inputs), "-o", str(tmp_path / "o"), "--optimizer", "SD"])
    assert result.exit_code == 2
    assert "unknown optimizer 'SD'" in result.output


def _md(cif: Path, out: Path, *extra: str):
    return runner.invoke(app, ["md", str(cif), "-o", str(out), "--no-analysis", *extra])


def test_md_cli_restart_extend_and_absurd_temperature(inputs, tmp_path):
    import json

    from ase.io import read

    cif, out = inputs / "Cu.cif", tmp_path / "md"
    assert _md(cif, out, "-n", "4").exit_code == 0

    other = _md(cif, out, "-n", "4", "-T", "500")
    assert other.exit_code == 2, other.output
    assert "temperature_K: 300.0 there, 500.0 now" in other.output and "--restart" in other.output

    again = _md(cif, out, "-n", "4", "-T", "500", "--restart")
    assert again.exit_code == 0, again.output
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert folder.name.startswith("Cu-")
    result = json.loads((folder / "result.json").read_text())
    assert result["settings"]["temperature_K"] == 500.0 and result["resumed_from_step"] is None

    longer = _md(cif, out, "-n", "7", "-T", "500")
    assert longer.exit_code == 0, longer.output
    assert [f.info["step"] for f in read(folder / "trajectory.extxyz", ":")] == list(range(8))

    absurd = _md(cif, tmp_path / "hot", "-n", "4", "-T", "1e6")
    assert absurd.exit_code == 2
    assert "above 10,000 K" in absurd.output
    assert not (tmp_path / "hot").exists()


def test_md_cli_help_lists_restart():
    result = runner.invoke(app, ["md", "--help"])
    assert "--restart" in result.output and "start over" in result.output
