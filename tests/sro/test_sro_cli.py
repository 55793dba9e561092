"""`matflow sro analyze`: the reference configuration through the CLI, a bad file beside a good one,
and one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from matflow.cli import app

runner = CliRunner()
DUMP = Path(__file__).resolve().parents[2] / "data" / "sro_warren_cowley" / "fcc_ternary_4000atoms.dump.gz"
EXPECTED = json.loads((DUMP.parent / "expected_warren_cowley.json").read_text())


def test_analyze_reference_dump_as_json_matches_expected_matrices():
    result = runner.invoke(app, ["sro", "analyze", str(DUMP), "--lattice", "fcc", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 1 and records[0]["ok"] and records[0]["frame"] == "last"
    alpha = np.asarray(records[0]["warren_cowley"]["alpha"])
    assert records[0]["warren_cowley"]["species"] == ["type 1", "type 2", "type 3"]
    np.testing.assert_allclose(alpha[0], EXPECTED["wc_shell1_12nn"], atol=1e-6)
    np.testing.assert_allclose(alpha[1], EXPECTED["wc_shell2_6nn"], atol=1e-6)


def test_analyze_table_marks_significant_pairs_and_bad_file_gives_exit_1(tmp_path):
    bad = tmp_path / "broken.dump"
    bad.write_text("ITEM: TIMESTEP\nnot a number\n")
    result = runner.invoke(app, ["sro", "analyze", str(DUMP), str(bad), "--lattice", "fcc",
                                 "--type-map", "1=Cr,2=Co,3=Ni"])
    assert result.exit_code == 1, result.output
    assert "Cr-Cr" in result.stdout and "*" in result.stdout
    assert "motif KL" in result.stdout
    assert "broken.dump" in result.output and "failed" in result.output


def test_analyze_usage_errors_are_one_line():
    for args, needle in ([["--lattice", "fcx"], "unknown lattice 'fcx'"],
                         [["--counts", "12,x"], "--counts"],
                         [["--type-map", "1=Qq"], "unknown element"],
                         [["--shells", "0"], "--shells"]):
        result = runner.invoke(app, ["sro", "analyze", str(DUMP), *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_simulate_tiny_alloy_prints_alpha_table_writes_json_and_plots(tmp_path):
    """A 108-atom CrCoNi cell, 12 CHGNet-labelled training cells and 20 sweeps: the wiring, not the
    physics (that is in test_montecarlo and the CrCoNi benchmark)."""
    out = tmp_path / "sim.json"
    result = runner.invoke(app, ["sro", "simulate", "CrCoNi", "--potential", "chgnet", "--n-train", "12",
                                 "--size", "3", "--sweeps", "20", "-T", "1500,600", "--a", "3.56",
                                 "--format", "json", "-o", str(out), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["temperature_K"] for r in data["temperatures"]] == [1500.0, 600.0]
    assert data["n_atoms"] == 108 and data["species"] == ["Co", "Cr", "Ni"]
    alpha = np.asarray(data["temperatures"][0]["alpha"])
    assert alpha.shape == (2, 3, 3) and np.allclose(alpha, alpha.transpose(0, 2, 1), atol=1e-9)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "alpha_vs_T_shell1.png", "alpha_vs_T_shell2.png", "motifs_600K.png"]
    from matflow.sro.summary import simulation_table

    table = simulation_table(data)
    assert "Cr-Cr" in table and "1500" in table and "cluster expansion fitted to chgnet" in table


def test_simulate_usage_errors_are_one_line(tmp_path):
    for args, needle in ([["CrCoNi", "-T", "500,abc"], "--temperatures"],
                         [["Cr", "-T", "500"], "at least two elements"],
                         [["CrCoNi", "--lattice", "bct"], "lattice"],
                         [["CrCoNi", "--potential", "nope", "--n-train", "10"], "nope"],
                         [["CrXxNi"], "Xx"]):
        result = runner.invoke(app, ["sro", "simulate", *args])
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) <= 2, result.output
