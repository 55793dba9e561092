"""Whole-batch behaviour of the commands on the inputs that used to crash them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from matflow.cli import app

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()

NAN_POSCAR = """NaCl with a NaN coordinate
1.0
4.1 0.0 0.0
0.0 4.1 0.0
0.0 0.0 4.1
Na Cl
1 1
direct
0.0 0.0 0.0
0.5 nan 0.5
"""


@pytest.fixture
def mixed(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "POSCAR_nan").write_text(NAN_POSCAR)
    for name in ("NaCl.cif", "POSCAR_Si"):
        (folder / name).write_bytes((DATA / "good" / name).read_bytes())
    return folder


@pytest.mark.parametrize("n_jobs", ["1", "2"])
def test_nan_coordinate_fails_alone_in_featurize(mixed, tmp_path, n_jobs):
    out = tmp_path / "t.parquet"
    res = runner.invoke(app, ["featurize", str(mixed), "-o", str(out), "--preset", "structure", "-j", n_jobs])
    assert res.exit_code == 1, res.output
    assert f"failed {mixed / 'POSCAR_nan'}: non-finite" in res.output
    table = pd.read_parquet(out)
    assert sorted(table.loc[table["status"] == "ok", "formula"]) == ["NaCl", "Si"]


@pytest.mark.parametrize("preset", ["composition", "structure"])
def test_nan_coordinate_is_refused_by_every_preset(mixed, tmp_path, preset):
    res = runner.invoke(app, ["featurize", str(mixed / "POSCAR_nan"), "-o", str(tmp_path / "t.parquet"),
                              "--preset", preset])
    assert res.exit_code == 2 and "non-finite" in res.output


def test_nan_coordinate_fails_alone_in_predict(mixed):
    res = runner.invoke(app, ["predict", "alexandria_cv300", str(mixed), "-f", "csv"])
    assert res.exit_code == 1, res.output
    assert f"failed {mixed / 'POSCAR_nan'}: non-finite" in res.output
    assert "NaCl" in res.output and ",Si," in res.output


def test_oversized_cell_is_refused_with_the_way_to_raise_the_limit(tmp_path):
    big = Structure(Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    big.make_supercell([7, 7, 7])  # 1,372 sites
    path = tmp_path / "big.json"
    path.write_text(big.to_json())
    out = tmp_path / "t.parquet"
    res = runner.invoke(app, ["featurize", str(path), "-o", str(out), "--preset", "composition"])
    assert res.exit_code == 2
    assert "cell has 1372 sites, more than the limit of 1000" in res.output
    assert "--max-sites" in res.output and "MATFLOW_MAX_SITES" in res.output
    res = runner.invoke(app, ["featurize", str(path), "-o", str(out), "--preset", "composition",
                              "--max-sites", "2000"])
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(out)["status"].tolist() == ["ok"]
