"""The shipped models load from models/ and answer a CIF through the CLI with physical values.

The latest versions are cross-calibrated; the earlier split-calibrated versions must keep loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, app
from matflow.ml.registry import load
from matflow.settings import PROJECT_ROOT

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()


@pytest.mark.parametrize(("spec", "low", "high", "calibration"), [
    ("matbench_phonons", 100.0, 400.0, "cross"),   # NaCl: highest optical phonon peak ~ 150-260 cm^-1
    ("alexandria_cv300", 20.0, 25.5, "cross"),     # NaCl at 300 K is close to the Dulong-Petit 3R = 24.9
    ("matbench_phonons@v5", 100.0, 400.0, "cross"),  # the most accurate: CHGNet phonon features
    ("matbench_phonons@v2", 100.0, 400.0, None),
    ("alexandria_cv300@v1", 20.0, 25.5, None),
])
def test_shipped_model_predicts_nacl(spec, low, high, calibration, monkeypatch):
    name, _, version = spec.partition("@")
    model = load(name, version or "latest", root=PROJECT_ROOT / "models")
    assert model.manifest["uncertainty"].get("calibration") == calibration
    assert model.manifest["metrics"]["cv"]["mae_mean"] > 0  # the card carries the benchmark figures
    assert "MAE" in (model.path / "README.md").read_text() or "mae_mean" in (model.path / "README.md").read_text()
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(PROJECT_ROOT / "models"))
    res = runner.invoke(app, ["predict", spec, str(DATA / "good" / "NaCl.cif"), "--format", "json"])
    assert res.exit_code == EXIT_OK, res.output
    (row,) = json.loads(res.stdout)
    assert low <= row["value"] <= high
    assert row["lower"] < row["value"] < row["upper"]
    assert row["unit"] == model.manifest["targets"][0]["unit"]
