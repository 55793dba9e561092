"""``matflow predict svib``: S_vib(305 K) with its interval, --T, --curve, --dos, and bad inputs.

A tiny DOS model (random "structure"-preset features, synthetic labels) in a temporary registry tests
the plumbing and the errors; the shipped ``svib`` model answers a fixture CIF with a physical value.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, app
from matflow.settings import PROJECT_ROOT

DATA = Path(__file__).parent / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    from matflow.atomistic.thermo import dos_grid
    from matflow.featurize import get_preset
    from matflow.ml.dos import DOSHeadRegressor
    from matflow.ml.svib import save_dos_model

    names = get_preset("structure").feature_labels()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, len(names)))
    nu = rng.uniform(3, 12, 40)
    y = {"dos_pot": np.stack([dos_grid([v], [3.0]) for v in nu]), "cv300": rng.uniform(20, 24, 40)}
    est = DOSHeadRegressor(hidden=(8,), epochs=3, n_estimators=2, min_calibration=1000).fit(X, y)
    root = tmp_path_factory.mktemp("models")
    save_dos_model(est, root / "svib_tiny" / "v1", name="svib_tiny", version="v1", feature_names=names,
                   label_sources={"summary": ["synthetic"]})
    return root


@pytest.fixture
def registry(tiny_registry, monkeypatch):
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(tiny_registry))
    return tiny_registry


def test_predict_svib_default_table_and_json(registry, tmp_path):
    cif = str(DATA / "good" / "NaCl.cif")
    res = runner.invoke(app, ["predict", "svib_tiny", cif])
    assert res.exit_code == EXIT_OK, res.output
    assert "NaCl" in res.stdout and "305" in res.stdout and "meV/K/atom" in res.stdout
    nacl = next(line for line in res.stdout.splitlines() if line.startswith(cif))
    assert nacl.split()[-1] == "OUT" and "none" in nacl  # out of domain: no interval printed
    res = runner.invoke(app, ["predict", "svib_tiny", cif, "--format", "json", "--T", "300,600,900"])
    assert res.exit_code == EXIT_OK, res.output
    records = json.loads(res.stdout)
    assert [r["T_K"] for r in records] == [300.0, 600.0, 900.0]
    for r in records:
        assert r["S_meV_per_K_atom"] == pytest.approx(r["S_J_per_K_mol_atom"] * 1000 / 96485.33212)
        assert 0 < r["Cv_J_per_K_mol_atom"] <= 3 * 8.3145
    # the tiny model was trained on random features: NaCl lies outside its domain and gets no interval
    assert all(r["in_domain"] is False and r["ad_distance"] > 0 for r in records)
    assert records[0]["S_lower"] is None or np.isnan(records[0]["S_lower"])
    assert records[2]["S_lower"] is None or np.isnan(records[2]["S_lower"])  # 900 K: outside 5-800 K
    assert records[0]["S_J_per_K_mol_atom"] < records[1]["S_J_per_K_mol_atom"] < records[2]["S_J_per_K_mol_atom"]


def test_predict_svib_curve_and_dos_files(registry, tmp_path):
    cif = str(DATA / "good" / "NaCl.cif")
    out = tmp_path / "dos"
    res = runner.invoke(app, ["predict", "svib_tiny", cif, "--curve", "--format", "csv", "--dos", str(out)])
    assert res.exit_code == EXIT_OK, res.output
    frame = pd.read_csv(pd.io.common.StringIO(res.stdout))
    assert len(frame) == 160 and frame["T_K"].min() == 5 and frame["T_K"].max() == 800
    assert np.all(np.diff(frame["S_J_per_K_mol_atom"]) > 0)
    csv = sorted(out.glob("*_dos.csv"))
    assert len(csv) == 1 and len(list(out.glob("*_dos.png"))) == 1
    dos = pd.read_csv(csv[0])
    assert (dos["dos_states_per_THz_per_atom"] >= 0).all()
    assert dos["dos_states_per_THz_per_atom"].sum() * 0.1 == pytest.approx(3.0, rel=1e-4)


def test_predict_svib_bad_inputs(registry, tmp_path):
    cif = str(DATA / "good" / "NaCl.cif")
    missing = str(tmp_path / "missing.cif")
    res = runner.invoke(app, ["predict", "svib_tiny", missing])
    assert res.exit_code == EXIT_USAGE and "missing.cif" in res.stderr
    shutil.copy(DATA / "bad" / "nan_coordinate.cif", tmp_path / "nan_coordinate.cif")
    res = runner.invoke(app, ["predict", "svib_tiny", cif, str(tmp_path / "nan_coordinate.cif"), "--format", "json"])
    assert res.exit_code == EXIT_PARTIAL, res.output
    assert [r["formula"] for r in json.loads(res.stdout)] == ["NaCl"] and "nan_coordinate.cif" in res.stderr
    res = runner.invoke(app, ["predict", "svib_nope", cif])
    assert res.exit_code == EXIT_USAGE and "unknown model 'svib_nope'" in res.stderr
    for bad in ("abc", "-5", "300,nan", "0", ""):
        res = runner.invoke(app, ["predict", "svib_tiny", cif, "--T", bad])
        assert res.exit_code == EXIT_USAGE, (bad, res.output)
        assert "--T" in res.stderr


def test_dos_options_need_a_dos_model(monkeypatch):
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(PROJECT_ROOT / "models"))
    res = runner.invoke(app, ["predict", "alexandria_cv300", str(DATA / "good" / "NaCl.cif"), "--T", "300"])
    assert res.exit_code == EXIT_USAGE and "phonon-DOS model" in res.stderr


def test_shipped_svib_on_a_fixture_cif(monkeypatch, tmp_path):
    """Si3N4 (mp-988) of the DFPT fixture, kept out of training: DFPT S(305 K) = 9.4 J/K/mol-atom."""
    from matflow.datasets import load_vib_thermo_fixture

    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(PROJECT_ROOT / "models"))
    row = load_vib_thermo_fixture().set_index("mp_id").loc["mp-988"]
    cif = tmp_path / "mp-988.cif"
    row["structure"].to(filename=str(cif))
    res = runner.invoke(app, ["predict", "svib", str(cif), "--format", "json"])
    assert res.exit_code == EXIT_OK, res.output
    (rec,) = json.loads(res.stdout)
    assert rec["model"].startswith("svib@") and rec["T_K"] == 305.0
    assert 5.0 < rec["S_J_per_K_mol_atom"] < 15.0
    assert rec["in_domain"] is True and rec["S_lower"] < rec["S_J_per_K_mol_atom"] < rec["S_upper"]


def test_models_lists_the_dos_model(registry):
    res = runner.invoke(app, ["models", "--json"])
    assert res.exit_code == EXIT_OK, res.output
    (entry,) = json.loads(res.stdout)["models"]
    assert entry["name"] == "svib_tiny" and entry["latest"] == "v1"
    (version,) = entry["versions"]
    assert version["status"] == "ok" and version["targets"][0]["name"] == "S_vib"


def test_predict_svib_structures_keeps_the_batch_going(registry):
    from pymatgen.core import Lattice, Structure

    from matflow.ml.registry import load
    from matflow.ml.svib import predict_svib_structures

    nacl = Structure.from_file(str(DATA / "good" / "NaCl.cif"))
    bad = Structure(Lattice.cubic(3.0), ["Na", "Na"], [[0, 0, 0], [0.001, 0, 0]])  # overlapping atoms
    rows, dos, failures = predict_svib_structures(load("svib_tiny"), [nacl, bad], ["good", "bad"],
                                                  temperatures_K=[305.0, 600.0])
    assert list(rows["source"]) == ["good", "good"] and list(dos) == ["good"]
    assert [f.source for f in failures] == ["bad"]


def test_shipped_svib_flags_an_element_it_never_saw(monkeypatch, tmp_path):
    """Gd is in neither Alexandria nor matbench_phonons: the row is out of domain, the table says why."""
    from matflow.datasets import load_vib_thermo_fixture

    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(PROJECT_ROOT / "models"))
    structure = load_vib_thermo_fixture().set_index("mp_id").loc["mp-988", "structure"].copy()
    structure.replace_species({"Si": "Gd"})
    cif = tmp_path / "gd3n4.cif"
    structure.to(filename=str(cif))
    res = runner.invoke(app, ["predict", "svib", str(cif), "--format", "json"])
    assert res.exit_code == EXIT_OK, res.output
    (rec,) = json.loads(res.stdout)
    assert rec["in_domain"] is False and rec["unseen_elements"] == "Gd"
    assert all(rec[k] is None for k in ("S_lower", "S_upper", "Cv_lower", "Cv_upper"))  # strict JSON null
    assert 0 < rec["S_J_per_K_mol_atom"] < 40
    table = runner.invoke(app, ["predict", "svib", str(cif)])
    assert table.exit_code == EXIT_OK, table.output
    assert "OUT (element never in training data: Gd)" in table.stdout
