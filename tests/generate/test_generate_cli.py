"""`matflow generate` with the shipped CDVAE: CIFs and a table of formula, lattice, density and
validity; bad options and an unknown model are one-line errors."""

from __future__ import annotations

import pandas as pd
from pymatgen.core import Structure
from typer.testing import CliRunner

from matflow.cli import app

runner = CliRunner()


def test_generate_writes_cifs_and_table(tmp_path):
    out = tmp_path / "gen"
    result = runner.invoke(app, ["generate", "--model", "cdvae-perov5", "-n", "2",
                                 "--steps-per-level", "1", "-o", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "generated.csv")
    assert list(table["file"]) == ["cdvae_0000.cif", "cdvae_0001.cif"]
    for row in table.itertuples():
        s = Structure.from_file(out / row.file)
        assert len(s) == row.n_atoms and abs(s.density - row.density_g_cm3) < 1e-6
    assert "2 CIF(s)" in result.stdout


def test_generate_bad_input_is_one_line(tmp_path):
    for args, needle in ([["-n", "0"], "-n"], [["--model", "nope@v1", "-n", "1"], "nope"]):
        result = runner.invoke(app, ["generate", *args, "-o", str(tmp_path / "x")])
        assert result.exit_code == 2, result.output
        assert needle in result.output and len(result.output.strip().splitlines()) == 1
