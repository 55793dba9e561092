"""The potential choice in relax, MD and phonons (API, CLI): provenance recorded, bad names refused."""

from __future__ import annotations

import json

import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from matflow.cli import app

runner = CliRunner()


@pytest.fixture
def nacl_file(tmp_path):
    """2-atom primitive rock-salt NaCl, slightly compressed (a = 5.5 Å; PBE about 5.7 Å)."""
    lat = Lattice([[0, 2.75, 2.75], [2.75, 0, 2.75], [2.75, 2.75, 0]])
    path = tmp_path / "NaCl.cif"
    Structure(lat, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(path))
    return path


def _only_json(folder, name):
    (path,) = folder.rglob(name)
    return json.loads(path.read_text())


def test_relax_and_phonons_cli_with_sevenn(nacl_file, tmp_path):
    out = tmp_path / "relax"
    result = runner.invoke(app, ["relax", str(nacl_file), "-o", str(out), "--potential", "sevenn-0",
                                 "--max-steps", "40"])
    assert result.exit_code == 0, result.output
    record = _only_json(out, "relax.json")
    assert record["potential"]["name"] == "sevenn-0" and record["potential"]["package"] == "sevenn"
    assert len(record["potential"]["weights_sha256"]) == 64
    assert record["final_volume_A3"] > record["initial_volume_A3"]  # compressed cell expands

    out = tmp_path / "ph"
    result = runner.invoke(app, ["phonons", str(nacl_file), "-o", str(out), "--potential",
                                 "sevenn:7net-0", "--no-relax", "--supercell-min-length", "6",
                                 "--t-step", "100"])
    assert result.exit_code == 0, result.output
    sevenn = _only_json(out, "phonons.json")
    assert sevenn["potential"]["name"] == "sevenn-0" and sevenn["model"] == sevenn["potential"]["model"]
    summary = json.loads((out / "phonons_summary.json").read_text())
    assert summary["results"][0]["potential"] == "sevenn-0"

    out = tmp_path / "ph_chgnet"
    result = runner.invoke(app, ["phonons", str(nacl_file), "-o", str(out), "--no-relax",
                                 "--supercell-min-length", "6", "--t-step", "100"])
    assert result.exit_code == 0, result.output
    chgnet = _only_json(out, "phonons.json")
    assert chgnet["potential"]["name"] == "chgnet" and chgnet["model"] == "CHGNet 0.3.0"
    # two potentials, same phonopy settings: different forces give different spectra
    assert chgnet["max_frequency_THz"] != pytest.approx(sevenn["max_frequency_THz"], abs=1e-3)


@pytest.mark.parametrize("command", ["relax", "md", "phonons"])
def test_unknown_potential_is_a_one_line_usage_error(nacl_file, tmp_path, command):
    out = tmp_path / "out"
    result = runner.invoke(app, [command, str(nacl_file), "-o", str(out), "--potential", "mace-mp"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--potential" in lines[0] and "'mace-mp'" in lines[0]
    assert "available: chgnet, sevenn-0" in lines[0]
    assert not out.exists()  # refused before any work


def test_potentials_command_lists_cards():
    result = runner.invoke(app, ["potentials"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("chgnet: CHGNet 0.3.0") and any(x.startswith("sevenn-0: ") for x in lines)
    assert all("offline: yes" in line and "licence" in line and "trained on" in line for line in lines)
    cards = json.loads(runner.invoke(app, ["potentials", "--json"]).output)
    assert {c["name"] for c in cards} >= {"chgnet", "sevenn-0"}
    assert all(c["package_version"][0].isdigit() for c in cards)


def test_md_with_sevenn_records_it_and_refuses_a_switch(tmp_path):
    from ase.build import bulk

    from matflow.atomistic.md import MDSettings, run_md

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    settings = MDSettings(temperature_K=300.0, n_steps=3, checkpoint_every=1)
    res = run_md(atoms, tmp_path, settings, potential="sevenn-0")
    assert res.n_steps == 3 and res.potential["name"] == "sevenn-0"
    assert res.model == res.potential["model"]
    longer = MDSettings(temperature_K=300.0, n_steps=5, checkpoint_every=1)
    with pytest.raises(ValueError, match="potential: 'sevenn-0' there, None now"):
        run_md(atoms, tmp_path, longer, potential="chgnet")
    with pytest.raises(ValueError, match="'nope'"):
        run_md(atoms, tmp_path / "x", settings, potential="nope")
