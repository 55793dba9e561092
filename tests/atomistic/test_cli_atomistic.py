"""CLI for CHGNet atomistics: relax, md and phonons on a tiny cell plus a bad file, with exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

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


def test_relax_cli_reports_units_and_partial_failure(inputs, tmp_path):
    result = runner.invoke(app, ["relax", str(inputs), "-o", str(tmp_path / "out"), "--max-steps", "30"])
    assert result.exit_code == 1, result.output
    assert "eV/atom" in result.output and "Å³" in result.output
    assert "overlapping_atoms.cif" in result.output and "too close" in result.output
    assert list((tmp_path / "out").rglob("relaxed.cif"))


def test_md_cli_writes_trajectory(inputs, tmp_path):
    (inputs / "overlapping_atoms.cif").unlink()
    out = tmp_path / "md"
    result = runner.invoke(app, ["md", str(inputs / "Cu.cif"), "-o", str(out), "-n", "4", "-T", "300",
                                 "--no-analysis"])
    assert result.exit_code == 0, result.output
    trajectories = list(out.rglob("*.extxyz"))
    assert trajectories
    from ase.io import read

    frames = read(str(next(p for p in trajectories if "trajectory" in p.name)), index=":")
    assert len(frames) >= 4


def test_phonons_cli_prints_per_atom_thermodynamics(inputs, tmp_path):
    (inputs / "overlapping_atoms.cif").unlink()
    result = runner.invoke(app, ["phonons", str(inputs / "Cu.cif"), "-o", str(tmp_path / "ph"),
                                 "--supercell-min-length", "6", "--no-relax", "--t-max", "300",
                                 "--t-step", "100"])
    assert result.exit_code == 0, result.output
    assert "J" in result.output and "300" in result.output


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
