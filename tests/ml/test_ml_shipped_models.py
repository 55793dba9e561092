"""The shipped models load from models/ and answer a CIF through the CLI with physical values.

Superseded versions have left the tree (their model cards and benchmark JSONs stay as history).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from matflow.cli import EXIT_OK, app
from matflow.ml.registry import load
from matflow.settings import PROJECT_ROOT

DATA = Path(__file__).parent.parent / "data"
runner = CliRunner()


@pytest.mark.parametrize(("spec", "low", "high", "calibration"), [
    ("matbench_phonons", 100.0, 400.0, "cross"),   # NaCl: highest optical phonon peak ~ 150-260 cm^-1
    # latest (v10) uses CHGNet phonon features, the lowest nested MAE; v8 the fast structure features
    ("alexandria_cv300", 20.0, 25.5, "cross"),     # NaCl at 300 K is close to the Dulong-Petit 3R = 24.9
    ("matbench_phonons@v8", 100.0, 400.0, "cross"),
])
def test_shipped_model_predicts_nacl(spec, low, high, calibration, monkeypatch):
    name, _, version = spec.partition("@")
    model = load(name, version or "latest", root=PROJECT_ROOT / "models")
    assert model.manifest["uncertainty"].get("calibration") == calibration
    metrics = model.manifest["metrics"]
    cv, folds = metrics["cv"], np.array(metrics["cv_per_fold_mae"])
    # the summary is the five folds' (rounded to 4 decimals): mean and population std
    assert len(folds) == 5
    assert cv["mae_mean"] == pytest.approx(folds.mean(), abs=1e-4)
    assert cv["mae_std"] == pytest.approx(folds.std(), abs=1e-4)
    if "cv_per_fold_coverage" in metrics:  # equal fold sizes: pooled coverage = mean of the folds'
        assert cv["coverage_pooled"] == pytest.approx(np.mean(metrics["cv_per_fold_coverage"]), abs=1e-4)
    # 90 % intervals: never under-covering; the nested-protocol models (distance widening on) over-cover
    # a little (README: 0.927-0.935 pooled), above the 0.87-0.93 band of the non-nested ones
    assert 0.87 <= cv["coverage_pooled"] <= 0.95
    card = (model.path / "README.md").read_text()
    assert f"mae_mean = {cv['mae_mean']:.4g}, mae_std = {cv['mae_std']:.4g}" in card
    monkeypatch.setenv("MATFLOW_MODELS_DIR", str(PROJECT_ROOT / "models"))
    res = runner.invoke(app, ["predict", spec, str(DATA / "good" / "NaCl.cif"), "--format", "json"])
    assert res.exit_code == EXIT_OK, res.output
    (row,) = json.loads(res.stdout)
    assert low <= row["value"] <= high
    assert row["lower"] < row["value"] < row["upper"]
    assert row["unit"] == model.manifest["targets"][0]["unit"]
