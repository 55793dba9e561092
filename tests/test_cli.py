"""CLI: --version, featurize on good and bad inputs with the documented exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from matflow import __version__
from matflow.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"matflow {__version__}"


def test_featurize_all_good(tmp_path):
    out = tmp_path / "t.parquet"
    result = runner.invoke(app, ["featurize", str(DATA / "good" / "NaCl.cif"), "-o", str(out),
                                 "--preset", "composition"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 1 featurized structure(s) x 176 features (0 failed) to {out}\n"
    assert len(pd.read_parquet(out)) == 1


def test_featurize_partial_failure_exit_code(tmp_path):
    shutil.copy(DATA / "good" / "NaCl.cif", tmp_path)
    shutil.copy(DATA / "bad" / "binary.cif", tmp_path)
    out = tmp_path / "t.parquet"
    result = runner.invoke(app, ["featurize", str(tmp_path), "-o", str(out), "--preset", "composition"])
    assert result.exit_code == 1
    assert "binary.cif: binary file, not a text structure format" in result.output
    table = pd.read_parquet(out)
    assert sorted(table["status"]) == ["failed", "ok"]


def test_featurize_nothing_usable(tmp_path):
    result = runner.invoke(app, ["featurize", str(DATA / "bad" / "empty.cif"), "-o",
                                 str(tmp_path / "t.parquet")])
    assert result.exit_code == 2
    assert "empty.cif: empty file" in result.output


def test_unknown_preset(tmp_path):
    result = runner.invoke(app, ["featurize", str(DATA / "good"), "-o", str(tmp_path / "t.parquet"),
                                 "--preset", "nope"])
    assert result.exit_code == 2
    assert "unknown preset 'nope'" in result.output


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "matflow.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"matflow {__version__}\n"


def test_featurize_preset_help_lists_exactly_the_presets():
    """The help text names the presets without importing them (matminer would slow every command);
    this keeps the written-out list equal to matflow.featurize.PRESETS, in its order."""
    import re

    import typer

    from matflow.featurize import PRESETS

    command = typer.main.get_command(app).commands["featurize"]
    (option,) = [p for p in command.params if p.name == "preset"]
    listed = re.fullmatch(r"Featurizer preset: (.+) \(README: Feature presets\)\.", option.help).group(1)
    assert re.split(r", | or ", listed) == list(PRESETS)
    result = runner.invoke(app, ["featurize", "--help"])
    assert result.exit_code == 0
    shown = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # the help as one line, unboxed
    assert f"--preset <str> {option.help} [default: structure]" in shown
